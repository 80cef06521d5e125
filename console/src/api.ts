// Calls to the control gateway. The session is the HttpOnly cookie set by the login URL; the
// console never sees or stores the token. State-changing calls carry the CSRF header the
// gateway requires of cookie-authenticated requests, and name the console as their client so
// a service's change history (and the run's review) says the console made the change.

export interface FieldError {
  field: string;
  rule: string;
  message: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: FieldError[] = [],
  ) {
    super(message);
  }
}

let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(f: () => void): void {
  onUnauthorized = f;
}

/** The headers every state-changing request of the console carries. */
export const WRITE_HEADERS: Readonly<Record<string, string>> = {
  'x-observastack-csrf': '1',
  'x-observastack-client': 'console',
};

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') Object.assign(headers, WRITE_HEADERS);
  if (body !== undefined) headers['content-type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data: unknown = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    if (resp.status === 401) onUnauthorized();
    const err = (data as { error?: { code?: string; message?: string; details?: FieldError[] } } | null)?.error;
    throw new ApiError(resp.status, err?.code ?? `http_${resp.status}`, err?.message ?? `${method} ${path}: ${resp.status}`, err?.details ?? []);
  }
  return data as T;
}

export async function text(path: string): Promise<string> {
  const resp = await fetch(path, { credentials: 'same-origin' });
  if (!resp.ok) {
    if (resp.status === 401) onUnauthorized();
    throw new ApiError(resp.status, `http_${resp.status}`, `GET ${path}: ${resp.status}`);
  }
  return resp.text();
}

export interface ScenarioSummary {
  id: string;
  title: string;
  difficulty: string;
  summary: string;
  learning_objectives: string[];
}

export interface Run {
  id: string;
  scenario_id: string;
  scenario_title: string;
  state: string;
  time_scale: number;
  started_by: string;
  started_at: string;
  baseline_at: string | null;
  incident_at: string | null;
  recovering_at: string | null;
  ended_at: string | null;
  end_reason: string | null;
  result: Completed | null;
  events?: TimelineEvent[];
}

export interface TimelineEvent {
  seq: number;
  at: string;
  kind: string;
  state?: string;
  milestone?: string;
  service?: string;
  field?: string;
  revision?: number;
  old?: unknown;
  new?: unknown;
  actor?: string;
  role?: string;
  source?: string;
  /** `config_change`: `patch`, `put` or `reset`. */
  action?: string;
  /** `config_change`: the client that made it (`console`, `cli`, `curl`…). */
  client?: string | null;
  /** `config_change`: `control-gateway`, or absent for a direct call to the service. */
  through?: string | null;
  note?: string;
  text?: string;
  index?: number;
}

export interface Hint {
  run_id: string;
  at: string;
  index: number;
  trigger: string;
  text: string;
}

export interface Sli {
  completed: number;
  failed: number;
  success_ratio: number | null;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  rps: number;
  orders_per_minute: number;
}

export interface Snapshot {
  at: string;
  window_secs: number;
  offered_rps: number;
  running: boolean;
  all: Sli;
  journeys: Record<string, Sli>;
}

export type Verdict = 'targeted' | 'blanket' | 'wrong';

export interface FieldDelta {
  field: string;
  old: unknown;
  new: unknown;
}

/** One learner change (one service revision) in the incident review. */
export interface LearnerChange {
  service: string;
  revision: number;
  at: string;
  action: 'patch' | 'put' | 'reset' | string;
  actor: string;
  role: string;
  client?: string | null;
  through?: string | null;
  fields: FieldDelta[];
  verdict: Verdict;
}

/** The `completed` message and a run's `result`: the incident review. Results stored before
 * runs were graded lack the review's fields, hence the optional ones. */
export interface Completed {
  run_id: string;
  scenario_id: string;
  outcome?: 'resolved' | 'gave_up';
  grade?: 'targeted' | 'blanket' | null;
  grade_note?: string;
  cause?: { service: string; fields: string[] }[];
  changes?: LearnerChange[];
  time_to_detect_secs: number | null;
  hints_before_detect?: number | null;
  time_to_mitigate_secs?: number | null;
  time_to_repair_secs: number | null;
  hints_used: number;
  hints_total: number;
  debrief: { what_broke: string; why: string; lessons: string[] } | null;
  solution: { summary: string; steps: string[]; patches?: { service: string; patch: unknown }[] } | null;
}

export interface ConsoleSettings {
  grafana_url: string | null;
  grafana_dashboards: { title: string; url: string }[];
  service_health_url: string | null;
}
