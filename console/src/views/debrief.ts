// The incident review of the last run: the grade (a targeted fix, a blanket one, or given up),
// why, every change the learner made with its verdict, the times a review asks for (detect,
// mitigate, repair), then what broke and the solution.
import type { Completed, LearnerChange } from '../api';
import { clear, fmtSecs, fmtTime, fmtValue, h } from '../dom';
import { store } from '../store';
import { loadCatalog } from './scenarios';

const VERDICT_HELP: Record<string, string> = {
  targeted: 'changed the cause and little else',
  blanket: 'a reset, a whole-document PUT, or a patch of the cause plus 3 or more other fields',
  wrong: 'changed nothing the scenario names as the cause',
};

/** The headline: the three outcomes must never look alike. */
function banner(c: Completed, title: string): HTMLElement {
  const outcome = c.outcome ?? 'resolved';
  let kind: string;
  let mark: string;
  let headline: string;
  let sub: string;
  if (outcome === 'gave_up') {
    kind = 'gave-up';
    mark = '⚐';
    headline = 'Gave up';
    sub = `${title}: not graded. The solution is below.`;
  } else if (c.grade === 'targeted') {
    kind = 'targeted';
    mark = '✔';
    headline = 'Targeted fix';
    sub = `${title}: resolved by changing what was broken.`;
  } else if (c.grade === 'blanket') {
    kind = 'blanket';
    mark = '⚠';
    headline = 'Blanket fix';
    sub = `${title}: resolved, but not by a diagnosis. A targeted fix would have changed only the cause.`;
  } else {
    kind = 'ungraded';
    mark = '✔';
    headline = 'Resolved';
    sub = `${title}: this run ended before runs were graded.`;
  }
  return h('section', { class: `card outcome ${kind}`, 'aria-labelledby': 'outcome-h', 'data-outcome': outcome, 'data-grade': c.grade ?? 'none' },
    h('p', { class: 'outcome-label small' }, outcome === 'gave_up' ? 'Outcome' : 'Grade'),
    h('h2', { id: 'outcome-h', class: 'outcome-headline' }, h('span', { 'aria-hidden': 'true' }, `${mark} `), headline),
    h('p', { role: 'status' }, sub),
    c.grade_note ? h('p', { class: 'grade-note', 'data-grade-note': '' }, c.grade_note) : null);
}

function detectLine(c: Completed): string {
  if (c.time_to_detect_secs === null || c.time_to_detect_secs === undefined) return 'no change on the cause’s service';
  const n = c.hints_before_detect;
  if (n === null || n === undefined) return '';
  return n === 0 ? 'no hint needed' : `after ${n} hint${n === 1 ? '' : 's'}`;
}

function via(change: LearnerChange): string {
  return change.through ? change.through : 'direct to the service';
}

function changesTable(c: Completed, incidentAt: string | null): Node {
  const changes = c.changes ?? [];
  if (!changes.length) return h('p', { class: 'muted', 'data-changes': 'none' }, 'You changed no configuration during this run.');
  const since = incidentAt ? Date.parse(incidentAt) : NaN;
  const rows = changes.map((ch) => {
    const offset = Number.isFinite(since) ? (Date.parse(ch.at) - since) / 1000 : NaN;
    const when = Number.isFinite(offset)
      ? [fmtTime(ch.at), h('br', {}), h('span', { class: 'muted small' }, offset < 0 ? 'before the incident' : `+${fmtSecs(offset)}`)]
      : fmtTime(ch.at);
    return h('tr', { 'data-change': `${ch.service}@${ch.revision}` },
      h('td', {}, when),
      h('th', { scope: 'row' }, ch.service, h('span', { class: 'muted small' }, ` r${ch.revision}`)),
      h('td', {}, ch.fields.length
        ? h('ul', { class: 'deltas' }, ch.fields.map((f) => h('li', {}, h('code', {}, f.field), ' ',
          h('del', {}, fmtValue(f.old)), ' → ', h('ins', {}, fmtValue(f.new)))))
        : h('span', { class: 'muted' }, '(no field changed)')),
      h('td', { 'data-action': ch.action }, ch.action),
      h('td', { 'data-client': ch.client ?? '' }, ch.client ?? 'unknown', h('br', {}), h('span', { class: 'muted small' }, `${ch.actor} (${ch.role})`)),
      h('td', { 'data-through': ch.through ?? '' }, via(ch)),
      h('td', {}, h('span', { class: `verdict ${ch.verdict}`, 'data-verdict': ch.verdict, title: VERDICT_HELP[ch.verdict] ?? '' }, ch.verdict)));
  });
  return h('div', { class: 'scroll', tabindex: 0, role: 'region', 'aria-label': 'Your changes' },
    h('table', { class: 'changes' },
      h('thead', {}, h('tr', {}, ['when', 'service', 'field: old → new', 'action', 'client', 'through', 'verdict'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)));
}

export class DebriefView {
  private root = h('div', { class: 'view' });

  mount(main: HTMLElement): void {
    clear(main, this.root);
    this.update();
  }

  unmount(): void {}

  update(): void {
    const c = store.completed;
    if (!c) {
      const run = store.run;
      let text = 'Resolve a scenario (or give up on it) to read its debrief here.';
      if (run && !run.ended_at) text = 'The debrief appears here when the active run is resolved, or when you give up on it.';
      else if (run?.state === 'abandoned') {
        text = 'The last run was stopped: a stopped run is not reviewed and reveals nothing. Run it again, and if you are stuck, “Give up and show the solution”.';
      }
      clear(this.root, h('h1', {}, 'Debrief'), h('p', { 'data-debrief': 'none' }, text));
      return;
    }
    const next = h('p', {});
    void loadCatalog().then((list) => {
      const i = list.findIndex((s) => s.id === c.scenario_id);
      const n = list[(i + 1) % list.length];
      if (n && n.id !== c.scenario_id) clear(next, 'Next: ', h('a', { href: `#/scenarios?highlight=${encodeURIComponent(n.id)}`, 'data-next': n.id }, n.title), ` (${n.difficulty})`);
    }).catch(() => {});
    const run = store.run?.id === c.run_id ? store.run : null;
    const gaveUp = c.outcome === 'gave_up';
    const d = c.debrief;
    const solution = c.solution
      ? [h('h2', { id: 'solution-h' }, gaveUp ? 'The solution' : 'The intended fix'), h('p', { 'data-solution': '' }, c.solution.summary),
          h('ol', {}, c.solution.steps.map((s) => h('li', {}, s)))]
      : null;
    const story = d
      ? [h('h2', {}, 'What broke'), h('p', {}, d.what_broke), h('h2', {}, 'Why'), h('p', {}, d.why),
          h('h2', {}, 'Lessons'), h('ul', {}, d.lessons.map((l) => h('li', {}, l)))]
      : null;
    const cause = (c.cause ?? []).flatMap((k) => k.fields.map((f) => `${k.service} ${f}`));
    clear(
      this.root,
      h('h1', {}, 'Debrief'),
      banner(c, run?.scenario_title ?? c.scenario_id),
      h('dl', { class: 'grid kpis debrief' },
        h('div', { class: 'card kpi' }, h('dt', {}, 'Time to detect'), h('dd', { 'data-kpi': 'ttd' }, fmtSecs(c.time_to_detect_secs)),
          h('dd', { class: 'kpi-sub', 'data-kpi': 'ttd-hints' }, detectLine(c))),
        h('div', { class: 'card kpi' }, h('dt', {}, 'Time to mitigate'), h('dd', { 'data-kpi': 'ttm' }, fmtSecs(c.time_to_mitigate_secs)),
          gaveUp ? h('dd', { class: 'kpi-sub' }, 'not mitigated') : null),
        h('div', { class: 'card kpi' }, h('dt', {}, gaveUp ? 'Time until you gave up' : 'Time to repair'), h('dd', { 'data-kpi': 'ttr' }, fmtSecs(c.time_to_repair_secs))),
        h('div', { class: 'card kpi' }, h('dt', {}, 'Hints used'), h('dd', { 'data-kpi': 'hints' }, `${c.hints_used} of ${c.hints_total}`))),
      h('p', { class: 'muted small' }, 'All times count from the start of the incident. Detect: your first config change on a service the cause names. '
        + 'Mitigate: the start of the recovery that held. Repair: the end of the run (resolved, after the success window, or given up).'),
      gaveUp ? solution : null,
      h('section', { 'aria-labelledby': 'changes-h' },
        h('h2', { id: 'changes-h' }, 'Your changes'),
        cause.length ? h('p', { class: 'small' }, 'Graded against the cause: ', cause.map((x, i) => [i ? ', ' : '', h('code', {}, x)])) : null,
        changesTable(c, run?.incident_at ?? null)),
      story,
      gaveUp ? null : solution,
      next,
    );
  }
}
