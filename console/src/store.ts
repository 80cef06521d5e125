// The console's live state: the active (or last) run, its timeline, hints and SLIs, fed by the
// orchestrator's WebSocket, which reconnects by itself.
import { api, type Completed, type Hint, type Run, type Snapshot, type TimelineEvent } from './api';

export interface Point {
  t: number; // unix seconds
  checkout: number | null;
  all: number | null;
  p95: number | null;
  opm: number | null;
}

export interface Store {
  run: Run | null;
  events: TimelineEvent[];
  hints: Hint[];
  slis: Snapshot | null;
  history: Point[];
  completed: Completed | null;
  connected: boolean;
  everConnected: boolean;
}

/** The User tab's chart spans this much. */
export const HISTORY_SECS = 15 * 60;

export const store: Store = {
  run: null,
  events: [],
  hints: [],
  slis: null,
  history: [],
  completed: null,
  connected: false,
  everConnected: false,
};

const listeners = new Set<() => void>();
export function subscribe(f: () => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}
function notify(): void {
  for (const f of listeners) f();
}

const completedListeners: ((c: Completed) => void)[] = [];
/** Runs this page saw while they were still active. */
const watchedActive = new Set<string>();
export function onCompleted(f: (c: Completed) => void): void {
  completedListeners.push(f);
}

function resetFor(run: Run | null): void {
  store.events = [];
  store.hints = [];
  store.slis = null;
  store.history = [];
  store.completed = run?.result ?? null;
}

/** Loads the run's stored timeline (config changes, milestones) after (re)connecting. */
async function loadTimeline(runId: string): Promise<void> {
  try {
    const detail = await api<Run>('GET', `/api/runs/${encodeURIComponent(runId)}`);
    if (store.run?.id !== runId) return;
    const known = new Set(store.events.map((e) => e.seq));
    for (const e of detail.events ?? []) if (!known.has(e.seq)) store.events.push(e);
    store.events.sort((a, b) => a.seq - b.seq);
    if (detail.result) store.completed = detail.result;
    notify();
  } catch {
    // The WebSocket keeps the view live; a missing history only loses old markers.
  }
}

async function loadLastRun(): Promise<void> {
  try {
    const [last] = await api<Run[]>('GET', '/api/runs?limit=1');
    if (!last) {
      if (store.run) {
        store.run = null;
        resetFor(null);
        notify();
      }
      return;
    }
    if (last.id !== store.run?.id) resetFor(last);
    store.run = last;
    if (last.result) store.completed = last.result;
    notify();
    void loadTimeline(last.id);
  } catch {
    // Without history the console simply shows no run.
  }
}

function handle(msg: Record<string, unknown>): void {
  switch (msg.type) {
    case 'state': {
      const run = (msg.run as Run | null) ?? null;
      if (!run) {
        // A restarted orchestrator forgets the last run; history still has it (and its debrief).
        void loadLastRun();
        break;
      }
      if (run.id !== store.run?.id) resetFor(run);
      store.run = run;
      if (!run.ended_at) watchedActive.add(run.id);
      if (run.result) store.completed = run.result;
      void loadTimeline(run.id);
      break;
    }
    case 'hint': {
      const hint = msg as unknown as Hint;
      if (!store.hints.some((x) => x.index === hint.index && x.run_id === hint.run_id)) store.hints.push(hint);
      break;
    }
    case 'event': {
      const e = msg as unknown as TimelineEvent;
      if (!store.events.some((x) => x.seq === e.seq)) store.events.push(e);
      break;
    }
    case 'slis': {
      const snap = msg.snapshot as Snapshot;
      store.slis = snap;
      const t = Date.parse(snap.at) / 1000;
      const last = store.history[store.history.length - 1];
      if (!last || t > last.t) {
        store.history.push({
          t,
          checkout: snap.journeys.checkout?.success_ratio ?? null,
          all: snap.all.success_ratio,
          p95: snap.all.p95_ms,
          opm: snap.all.orders_per_minute,
        });
        const from = t - HISTORY_SECS;
        while (store.history.length && store.history[0].t < from) store.history.shift();
      }
      break;
    }
    case 'completed': {
      const c = msg as unknown as Completed;
      store.completed = c;
      // Only news for a page that watched the run: a late joiner (or a reload) gets the
      // stored result too, and must not be pulled away from the tab it opened.
      if (watchedActive.has(c.run_id)) for (const f of completedListeners) f(c);
      break;
    }
    default:
      return;
  }
  notify();
}

let socket: WebSocket | null = null;
let retry = 0;

/** Connects to `/api/ws` and keeps reconnecting (1 s, 2 s, … up to 10 s apart). */
export function connect(): void {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/api/ws`);
  socket = ws;
  ws.onopen = () => {
    retry = 0;
    store.connected = true;
    store.everConnected = true;
    notify();
  };
  ws.onmessage = (ev) => {
    try {
      handle(JSON.parse(String(ev.data)));
    } catch {
      // A message this console does not understand is skipped, not fatal.
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    store.connected = false;
    notify();
    retry = Math.min(retry + 1, 10);
    setTimeout(connect, retry * 1000);
  };
}

/** After a start, stop or reset: the WebSocket reports it too, but do not wait for it. */
export async function refreshRun(): Promise<void> {
  try {
    const run = await api<Run>('GET', '/api/runs/current');
    if (run.id !== store.run?.id) resetFor(run);
    store.run = run;
    if (!run.ended_at) watchedActive.add(run.id);
  } catch {
    // 404: no active run; the last state message stays.
  }
  notify();
}

export function elapsedSecs(run: Run): number {
  const end = run.ended_at ? Date.parse(run.ended_at) : Date.now();
  return (end - Date.parse(run.started_at)) / 1000;
}

export function isActive(run: Run | null): boolean {
  return !!run && !run.ended_at;
}
