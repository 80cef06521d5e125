import { api, ApiError, type Run, type ScenarioSummary, type TimelineEvent } from '../api';
import { holds } from '../conditions';
import { clear, fmtClock, fmtTime, h } from '../dom';
import { elapsedSecs, isActive, refreshRun, store } from '../store';

const STATES = ['setup', 'baseline', 'incident', 'recovering', 'resolved'];

/** Milestones worth their own words in the feed; others show their name. */
const MILESTONES: Record<string, { label: string; cls: string }> = {
  load_below_plan: { label: 'Offered load below the scenario’s plan (the run cannot complete until it is back)', cls: 'warn' },
  load_restored: { label: 'Offered load back to the scenario’s plan', cls: 'ok' },
  gave_up: { label: 'Gave up: the debrief shows the solution', cls: 'gave-up' },
};

/** `patch via console, through control-gateway`: how a config change was made. */
function changeVia(e: TimelineEvent): string {
  const parts = [e.action, e.client ? `via ${e.client}` : null, e.through ? `through ${e.through}` : e.client ? 'direct' : null];
  return parts.filter(Boolean).join(', ');
}
const details = new Map<string, Record<string, unknown>>();

export async function scenarioDetail(id: string): Promise<Record<string, unknown> | null> {
  if (details.has(id)) return details.get(id) ?? null;
  try {
    const d = await api<Record<string, unknown>>('GET', `/api/scenarios/${encodeURIComponent(id)}`);
    details.set(id, d);
    return d;
  } catch {
    return null;
  }
}

export function forgetScenarioDetails(): void {
  details.clear();
}

let catalog: ScenarioSummary[] | null = null;
/** The first call of the page (the session check) already fetched the catalog. */
export function primeCatalog(list: ScenarioSummary[]): void {
  catalog = list;
}
export async function loadCatalog(): Promise<ScenarioSummary[]> {
  if (!catalog) catalog = await api<ScenarioSummary[]>('GET', '/api/scenarios');
  return catalog;
}

export class ScenariosView {
  private root = h('div', { class: 'view' });
  private runPanel = h('section', { class: 'card run', 'aria-labelledby': 'run-h' });
  private catalogEl = h('section', { 'aria-labelledby': 'catalog-h' });
  private message = h('p', { class: 'message', role: 'alert' });
  private timer: number | undefined;
  private criteria = h('ul', { class: 'criteria', 'aria-label': 'Success criteria' });
  private conditions: string[] = [];
  private renderedKey = '';

  mount(main: HTMLElement): void {
    clear(this.root, h('h1', {}, 'Scenarios'), this.message, this.runPanel, this.catalogEl);
    clear(main, this.root);
    void this.renderCatalog();
    this.update();
    this.timer = window.setInterval(() => this.tick(), 1000);
  }

  unmount(): void {
    window.clearInterval(this.timer);
  }

  private say(text: string): void {
    this.message.textContent = text;
  }

  private async act(label: string, f: () => Promise<unknown>): Promise<void> {
    this.say('');
    try {
      await f();
      forgetScenarioDetails();
      await refreshRun();
    } catch (err) {
      this.say(err instanceof ApiError ? `${label}: ${err.message}` : `${label} failed`);
    }
  }

  private async renderCatalog(): Promise<void> {
    let list: ScenarioSummary[];
    try {
      list = await loadCatalog();
    } catch (err) {
      this.say(err instanceof ApiError ? err.message : 'cannot load the catalog');
      return;
    }
    const scale = h(
      'select',
      { id: 'time-scale', name: 'time_scale' },
      h('option', { value: '1' }, 'real time (×1)'),
      h('option', { value: '0.5' }, 'twice as fast (×0.5)'),
      h('option', { value: '0.25' }, 'four times as fast (×0.25)'),
      h('option', { value: '0.1' }, 'ten times as fast (×0.1)'),
    );
    const cards = list.map((s) =>
      h(
        'article',
        { class: 'card scenario', 'data-scenario': s.id, 'aria-labelledby': `sc-${s.id}` },
        h('h3', { id: `sc-${s.id}` }, s.title),
        h('p', { class: `badge ${s.difficulty}` }, s.difficulty),
        h('p', {}, s.summary),
        h('details', {}, h('summary', {}, 'Learning objectives'), h('ul', {}, s.learning_objectives.map((o) => h('li', {}, o)))),
        h(
          'button',
          {
            type: 'button',
            class: 'primary',
            'aria-label': `Start ${s.title}`,
            onclick: () =>
              void this.act('Start', () =>
                api<Run>('POST', '/api/runs', { scenario: s.id, time_scale: Number(scale.value) }),
              ),
          },
          'Start',
        ),
      ),
    );
    clear(
      this.catalogEl,
      h('h2', { id: 'catalog-h' }, 'Catalog'),
      h('p', { class: 'row' }, h('label', { for: 'time-scale' }, 'Pace of a run '), scale,
        h('button', { type: 'button', onclick: () => {
          // Resetting abandons an active run: ask first, only then.
          if (isActive(store.run) && !window.confirm('Reset everything? The active run is abandoned and every service goes back to its defaults.')) return;
          void this.act('Reset', () => api('POST', '/api/reset'));
        } }, 'Reset everything')),
      h('div', { class: 'grid' }, cards),
    );
    // The debrief's "next scenario" link lands here with ?highlight=<id>.
    const wanted = /[?&]highlight=([^&]+)/.exec(location.hash)?.[1];
    const card = wanted ? this.catalogEl.querySelector<HTMLElement>(`[data-scenario="${CSS.escape(decodeURIComponent(wanted))}"]`) : null;
    if (card) {
      card.classList.add('highlight');
      card.scrollIntoView({ block: 'center' });
      card.querySelector<HTMLButtonElement>('button')?.focus({ preventScroll: true });
    }
  }

  private tick(): void {
    const el = this.runPanel.querySelector('[data-elapsed]');
    if (el && store.run) el.textContent = fmtClock(elapsedSecs(store.run));
  }

  private renderCriteria(): void {
    clear(this.criteria, this.conditions.map((c) => {
      const ok = holds(c, store.slis);
      const mark = ok === true ? '✔' : ok === false ? '✘' : '…';
      const word = ok === true ? 'holds' : ok === false ? 'does not hold' : 'not known yet';
      return h('li', { class: ok === true ? 'ok' : ok === false ? 'bad' : 'unknown' },
        h('span', { class: 'mark', 'aria-hidden': 'true' }, mark), h('code', {}, c), h('span', { class: 'sr-only' }, ` ${word}`));
    }));
  }

  update(): void {
    const run = store.run;
    // SLI snapshots arrive every tick: only the check marks follow them, so focus and
    // scrolling in the rest of the panel stay put.
    const key = run ? `${run.id}|${run.state}|${store.hints.length}|${store.events.length}|${!!store.completed}` : '';
    if (key === this.renderedKey && run) {
      this.renderCriteria();
      return;
    }
    this.renderedKey = key;
    if (!run) {
      clear(this.runPanel, h('h2', { id: 'run-h' }, 'No run yet'), h('p', {}, 'Pick a scenario below and press Start.'));
      return;
    }
    const active = isActive(run);
    const reached = (s: string): string | null =>
      ({ setup: run.started_at, baseline: run.baseline_at, incident: run.incident_at, recovering: run.recovering_at,
        resolved: run.state === 'resolved' ? run.ended_at : null } as Record<string, string | null>)[s] ?? null;
    const timeline = h(
      'ol',
      { class: 'states', 'aria-label': 'Run states' },
      STATES.map((s) =>
        h('li', { class: `${reached(s) ? 'done' : ''} ${run.state === s ? 'current' : ''}`, 'aria-current': run.state === s ? 'step' : null },
          h('span', { class: 'state-name' }, s), h('span', { class: 'muted' }, reached(s) ? fmtTime(reached(s)) : '')),
      ),
      run.state === 'abandoned' ? h('li', { class: 'current abandoned' }, h('span', { class: 'state-name' }, 'abandoned'),
        h('span', { class: 'muted' }, run.end_reason ?? '')) : null,
      run.state === 'gave_up' ? h('li', { class: 'current gave-up', 'aria-current': 'step' }, h('span', { class: 'state-name' }, 'gave up'),
        h('span', { class: 'muted' }, fmtTime(run.ended_at))) : null,
    );
    const criteria = this.criteria;
    void scenarioDetail(run.scenario_id).then((d) => {
      this.conditions = ((d?.success as { conditions?: string[] } | undefined)?.conditions) ?? [];
      this.renderCriteria();
    });
    // Scrollable, so reachable by keyboard too.
    const feed = h('ol', { class: 'feed', 'aria-label': 'Hints and events', 'aria-live': 'polite', tabindex: 0 });
    const items: { at: string; node: HTMLElement }[] = [];
    for (const hint of store.hints) {
      items.push({ at: hint.at, node: h('li', { class: 'hint' }, h('strong', {}, `Hint ${hint.index + 1}`), ' ', h('span', { class: 'muted' }, fmtTime(hint.at)), h('p', {}, hint.text)) });
    }
    for (const e of store.events) {
      if (e.kind === 'config_change') {
        items.push({ at: e.at, node: h('li', { class: `event ${e.source}`, 'data-event': 'config_change' }, h('span', { class: 'muted' }, fmtTime(e.at)), ' ',
          `${e.source === 'scenario' ? 'Scenario' : e.actor ?? 'learner'} changed ${e.service} ${e.field}: ${JSON.stringify(e.old)} → ${JSON.stringify(e.new)}`,
          changeVia(e) ? h('span', { class: 'muted small' }, ` (${changeVia(e)})`) : null) });
      } else if (e.kind === 'milestone') {
        const known = MILESTONES[e.milestone ?? ''];
        items.push({ at: e.at, node: h('li', { class: `event milestone ${known?.cls ?? ''}`, 'data-milestone': e.milestone ?? '' }, h('span', { class: 'muted' }, fmtTime(e.at)), ' ',
          `${known?.label ?? (e.milestone ?? '').replace(/_/g, ' ')}${e.note ? ` — ${e.note}` : ''}`) });
      }
    }
    items.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
    clear(feed, items.length ? items.map((i) => i.node) : h('li', { class: 'muted' }, 'Hints and events appear here as the run goes on.'));
    clear(
      this.runPanel,
      h('h2', { id: 'run-h' }, active ? 'Active run: ' : 'Last run: ', run.scenario_title),
      h('p', { class: 'row' },
        h('span', {}, 'State ', h('strong', { 'data-run-state': run.state }, run.state.replace(/_/g, ' '))),
        h('span', {}, 'Elapsed ', h('strong', { 'data-elapsed': '' }, fmtClock(elapsedSecs(run)))),
        run.time_scale !== 1 ? h('span', { class: 'muted' }, `time ×${run.time_scale}`) : null,
        active ? h('button', { type: 'button', onclick: () => {
          if (!window.confirm('Stop this run? It is abandoned: not reviewed, and the solution stays hidden. (To see the solution, give up instead.)')) return;
          void this.act('Stop', () => api('POST', '/api/runs/current/stop'));
        } }, 'Stop') : null,
        active ? h('button', { type: 'button', class: 'danger', onclick: () => {
          if (!window.confirm('Give up on this run? The load stops, every service goes back to its defaults, and the debrief shows the solution. A run given up is not graded.')) return;
          void this.act('Give up', () => api('POST', '/api/runs/current/give-up'));
        } }, 'Give up and show the solution') : null,
        run.state === 'resolved' || run.state === 'gave_up' ? h('a', { href: '#/debrief', class: 'button primary' }, 'Read the debrief') : null,
      ),
      timeline,
      h('div', { class: 'cols' },
        h('div', {}, h('h3', {}, 'Success criteria'), criteria, h('p', { class: 'muted small' }, 'Checked live on the users’ last few seconds; the run resolves once all hold for the scenario’s window.')),
        h('div', {}, h('h3', {}, 'Hints and events'), feed)),
    );
  }
}
