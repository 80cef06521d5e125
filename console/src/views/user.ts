import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { clear, fmtMs, fmtPct, h } from '../dom';
import { HISTORY_SECS, store } from '../store';

/** Fault and fix moments, drawn as labelled vertical lines over the chart. */
function markers(): { t: number; label: string; color: string }[] {
  const out: { t: number; label: string; color: string }[] = [];
  for (const e of store.events) {
    const t = Date.parse(e.at) / 1000;
    if (e.kind === 'milestone' && e.milestone === 'fault_applied') out.push({ t, label: 'fault', color: '#c62828' });
    else if (e.kind === 'config_change' && e.source === 'learner') out.push({ t, label: 'fix', color: '#2e7d32' });
    else if (e.kind === 'milestone' && e.milestone === 'resolved') out.push({ t, label: 'resolved', color: '#1565c0' });
    else if (e.kind === 'milestone' && e.milestone === 'gave_up') out.push({ t, label: 'gave up', color: '#5f6b7a' });
  }
  return out;
}

const markerPlugin: uPlot.Plugin = {
  hooks: {
    draw: (u: uPlot) => {
      const ctx = u.ctx;
      const { top, height } = u.bbox;
      ctx.save();
      ctx.font = `${12 * devicePixelRatio}px sans-serif`;
      for (const m of markers()) {
        const x = Math.round(u.valToPos(m.t, 'x', true));
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
        ctx.strokeStyle = m.color;
        ctx.fillStyle = m.color;
        ctx.lineWidth = 2 * devicePixelRatio;
        ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
        ctx.fillText(m.label, x + 4 * devicePixelRatio, top + 14 * devicePixelRatio);
      }
      ctx.restore();
    },
  },
};

export class UserView {
  private root = h('div', { class: 'view' });
  private cards = h('div', { class: 'grid kpis' });
  private table = h('table', { class: 'journeys' });
  private chartBox = h('div', { class: 'chart', role: 'img', 'aria-label': 'Success ratio and p95 latency over the last 15 minutes, with fault and fix moments marked' });
  private markersList = h('ul', { class: 'markers small' });
  private chart: uPlot | null = null;
  private resize = () => this.fit();

  mount(main: HTMLElement): void {
    clear(
      this.root,
      h('h1', {}, 'User'),
      h('p', { class: 'muted' }, 'What shoppers feel, measured by the load runner on their side of the user gateway.'),
      this.cards,
      h('section', { 'aria-labelledby': 'chart-h' }, h('h2', { id: 'chart-h' }, 'Last 15 minutes'), this.chartBox, this.markersList),
      h('section', { 'aria-labelledby': 'journeys-h' }, h('h2', { id: 'journeys-h' }, 'Journeys'), h('div', { class: 'scroll', tabindex: 0, role: 'region', 'aria-label': 'Journeys table' }, this.table)),
    );
    clear(main, this.root);
    this.chart = new uPlot(
      {
        width: this.width(),
        height: 260,
        plugins: [markerPlugin],
        scales: {
          // The span of the data, stretched to the latest marker: the `resolved` moment comes
          // after the last snapshot, when the load has already stopped.
          x: {
            time: true,
            range: (_u, min, max) => {
              const last = Math.max(max ?? 0, ...markers().map((m) => m.t + 1));
              const first = Math.min(min ?? last, ...markers().map((m) => m.t - 1));
              return [Math.max(first, last - HISTORY_SECS), last];
            },
          }, pct: { range: [0, 100] }, ms: { range: (_u, _min, max) => [0, Math.max(50, max ?? 0) * 1.1] } },
        axes: [
          {},
          { scale: 'pct', values: (_u, vals) => vals.map((v) => `${v}%`), label: 'success' },
          { scale: 'ms', side: 1, grid: { show: false }, values: (_u, vals) => vals.map((v) => `${v}ms`), label: 'p95' },
        ],
        series: [
          {},
          { label: 'checkout success', scale: 'pct', stroke: '#c62828', width: 2, value: (_u, v) => (v == null ? '—' : `${v.toFixed(1)}%`) },
          { label: 'all journeys success', scale: 'pct', stroke: '#1565c0', width: 2, value: (_u, v) => (v == null ? '—' : `${v.toFixed(1)}%`) },
          { label: 'p95 latency', scale: 'ms', stroke: '#6a1b9a', width: 1, dash: [4, 4], value: (_u, v) => (v == null ? '—' : `${v.toFixed(0)} ms`) },
        ],
      },
      [[], [], [], []],
      this.chartBox,
    );
    window.addEventListener('resize', this.resize);
    this.update();
  }

  unmount(): void {
    window.removeEventListener('resize', this.resize);
    this.chart?.destroy();
    this.chart = null;
  }

  private width(): number {
    return Math.max(280, (this.chartBox.clientWidth || this.root.clientWidth || 800) - 4);
  }

  private fit(): void {
    this.chart?.setSize({ width: this.width(), height: 260 });
  }

  update(): void {
    const snap = store.slis;
    const checkout = snap?.journeys.checkout;
    const kpi = (label: string, value: string, id: string, bad = false) =>
      h('div', { class: `card kpi ${bad ? 'bad' : ''}` }, h('span', { class: 'kpi-label', id: `${id}-l` }, label),
        h('strong', { 'data-kpi': id, 'aria-labelledby': `${id}-l` }, value));
    const ratio = checkout?.success_ratio ?? null;
    clear(
      this.cards,
      kpi('Checkout success', fmtPct(ratio), 'checkout-success', ratio !== null && ratio < 0.99),
      kpi('All journeys success', fmtPct(snap?.all.success_ratio), 'all-success', (snap?.all.success_ratio ?? 1) < 0.99),
      kpi('Orders per minute', snap ? snap.all.orders_per_minute.toFixed(0) : '—', 'orders'),
      kpi('p95 latency (all)', fmtMs(snap?.all.p95_ms), 'p95'),
    );
    const rows = snap
      ? Object.entries(snap.journeys).sort(([a], [b]) => a.localeCompare(b)).map(([name, s]) =>
          h('tr', { class: (s.success_ratio ?? 1) < 0.99 ? 'bad' : '' },
            h('th', { scope: 'row' }, name), h('td', {}, fmtPct(s.success_ratio)), h('td', {}, fmtMs(s.p50_ms)),
            h('td', {}, fmtMs(s.p95_ms)), h('td', {}, fmtMs(s.p99_ms)), h('td', {}, s.rps.toFixed(1))))
      : [h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No measurements yet: start a scenario to send users in.'))];
    clear(
      this.table,
      h('caption', { class: 'sr-only' }, 'Per-journey success and latency percentiles over the last window'),
      h('thead', {}, h('tr', {}, ['journey', 'success', 'p50', 'p95', 'p99', 'journeys/s'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows),
    );
    clear(this.markersList, markers().map((m) => {
      const swatch = h('span', { class: 'swatch', 'aria-hidden': 'true' });
      swatch.style.background = m.color;
      return h('li', {}, swatch, `${m.label} at ${new Date(m.t * 1000).toLocaleTimeString()}`);
    }));
    if (this.chart) {
      const now = Date.now() / 1000;
      const pts = store.history.filter((p) => p.t >= now - HISTORY_SECS);
      const pct = (v: number | null) => (v === null ? null : v * 100);
      this.chart.setData([
        pts.map((p) => p.t),
        pts.map((p) => pct(p.checkout)),
        pts.map((p) => pct(p.all)),
        pts.map((p) => p.p95),
      ] as uPlot.AlignedData);
      if (this.chart.width !== this.width()) this.fit();
    }
  }
}
