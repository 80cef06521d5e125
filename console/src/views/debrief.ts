import { clear, fmtSecs, h } from '../dom';
import { store } from '../store';
import { loadCatalog } from './scenarios';

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
      clear(this.root, h('h1', {}, 'Debrief'),
        h('p', {}, store.run && !store.run.ended_at
          ? 'The debrief appears here when the active run is resolved.'
          : 'Resolve a scenario to read its debrief here.'));
      return;
    }
    const next = h('p', {});
    void loadCatalog().then((list) => {
      const i = list.findIndex((s) => s.id === c.scenario_id);
      const n = list[(i + 1) % list.length];
      if (n && n.id !== c.scenario_id) clear(next, 'Next: ', h('a', { href: `#/scenarios?highlight=${encodeURIComponent(n.id)}`, 'data-next': n.id }, n.title), ` (${n.difficulty})`);
    }).catch(() => {});
    const d = c.debrief;
    clear(
      this.root,
      h('h1', {}, 'Debrief'),
      h('p', { class: 'success', role: 'status' }, `Resolved: ${store.run?.scenario_title ?? c.scenario_id}`),
      h('dl', { class: 'grid kpis debrief' },
        h('div', { class: 'card kpi' }, h('dt', {}, 'Time to detect'), h('dd', { 'data-kpi': 'ttd' }, fmtSecs(c.time_to_detect_secs))),
        h('div', { class: 'card kpi' }, h('dt', {}, 'Time to repair'), h('dd', { 'data-kpi': 'ttr' }, fmtSecs(c.time_to_repair_secs))),
        h('div', { class: 'card kpi' }, h('dt', {}, 'Hints used'), h('dd', { 'data-kpi': 'hints' }, `${c.hints_used} of ${c.hints_total}`))),
      h('p', { class: 'muted small' }, 'Time to detect: incident start to your first config change. Time to repair: incident start to resolved, including the success window.'),
      d ? [h('h2', {}, 'What broke'), h('p', {}, d.what_broke), h('h2', {}, 'Why'), h('p', {}, d.why),
        h('h2', {}, 'Lessons'), h('ul', {}, d.lessons.map((l) => h('li', {}, l)))] : null,
      c.solution ? [h('h2', {}, 'The intended fix'), h('p', {}, c.solution.summary), h('ol', {}, c.solution.steps.map((s) => h('li', {}, s)))] : null,
      next,
    );
  }
}
