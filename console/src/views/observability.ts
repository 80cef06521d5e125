import { api, type ConsoleSettings, text } from '../api';
import { clear, h } from '../dom';

interface ServiceList {
  services: { name: string; config?: string }[];
}

/** The few series worth reading at a glance, summed per service from its own `/metrics`. */
function summarize(metrics: string): { label: string; value: string }[] {
  let requests = 0;
  let errors = 0;
  let seconds = 0;
  const gauges: { label: string; value: string }[] = [];
  for (const line of metrics.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const [, name, labels = '', raw] = m;
    const v = Number(raw);
    if (!Number.isFinite(v)) continue;
    if (name === 'http_server_request_duration_seconds_count') {
      requests += v;
      if (/http_response_status_code="5/.test(labels)) errors += v;
    } else if (name === 'http_server_request_duration_seconds_sum') {
      seconds += v;
    } else if (/(_in_flight|_queued|_in_use|_revision|pool_size)$/.test(name) || name.endsWith('_pool_connections')) {
      // Every series of a service carries its `service` label: leave it out, keep the rest.
      const rest = labels.replace(/^\{|\}$/g, '').split(',').filter((l) => l && !l.startsWith('service=')).join(', ');
      gauges.push({ label: rest ? `${name} (${rest})` : name, value: raw });
    }
  }
  return [
    { label: 'requests served', value: requests.toFixed(0) },
    { label: 'answered 5xx', value: requests ? `${errors.toFixed(0)} (${((errors / requests) * 100).toFixed(2)} %)` : '0' },
    { label: 'mean latency', value: requests ? `${((seconds / requests) * 1000).toFixed(1)} ms` : '—' },
    ...gauges.slice(0, 12),
  ];
}

export class ObservabilityView {
  private root = h('div', { class: 'view' });
  private timer: number | undefined;

  constructor(private settings: ConsoleSettings) {}

  mount(main: HTMLElement): void {
    clear(main, this.root);
    const s = this.settings;
    const parts: Node[] = [h('h1', {}, 'Observability')];
    // One switch over every embeddable view: the facts service's Service Health first (error
    // rate, latency percentiles and throughput per service, grouped by route), then Grafana.
    const views: { title: string; url: string }[] = [];
    if (s.service_health_url) views.push({ title: 'Service Health', url: s.service_health_url });
    if (s.grafana_url) {
      const boards = s.grafana_dashboards.length ? s.grafana_dashboards : [{ title: 'Grafana', url: s.grafana_url }];
      for (const b of boards) views.push({ title: b.title, url: b.url });
    }
    if (views.length) {
      const frame = h('iframe', { title: views[0].title, src: views[0].url, class: 'grafana' });
      const open = h('a', { href: views[0].url, target: '_blank', rel: 'noopener' }, 'open in a new tab');
      const pick = h('select', { id: 'dashboard' }, views.map((v, i) => h('option', { value: String(i) }, v.title)));
      pick.addEventListener('change', () => {
        const v = views[Number(pick.value)];
        if (!v) return;
        frame.src = v.url;
        frame.title = v.title;
        open.href = v.url;
      });
      parts.push(h('p', { class: 'row' }, h('label', { for: 'dashboard' }, 'Dashboard '), pick, open), frame);
    }
    const box = h('div', { class: 'grid' });
    const intro = views.length
      ? 'Each service’s own metrics, always available:'
      : 'No Grafana and no Service Health view are configured here (the native launch); each service’s own metrics follow.';
    const metrics = h('details', { class: 'own-metrics', open: !views.length },
      h('summary', {}, 'Services’ own metrics'), h('p', { class: 'muted' }, intro), box);
    parts.push(metrics);
    clear(this.root, parts);
    const load = async () => {
      let list: ServiceList;
      try {
        list = await api<ServiceList>('GET', '/api/services');
      } catch {
        clear(box, h('p', { class: 'message' }, 'Cannot list the services.'));
        return;
      }
      const cards = await Promise.all(
        list.services.map(async ({ name }) => {
          try {
            const rows = summarize(await text(`/api/services/${encodeURIComponent(name)}/metrics`));
            return h('article', { class: 'card', 'aria-labelledby': `m-${name}` }, h('h2', { id: `m-${name}` }, name),
              h('dl', { class: 'metrics' }, rows.map((r) => [h('dt', {}, r.label), h('dd', {}, r.value)])));
          } catch {
            return h('article', { class: 'card' }, h('h2', {}, name), h('p', { class: 'muted' }, 'metrics unavailable'));
          }
        }),
      );
      clear(box, cards);
    };
    void load();
    this.timer = window.setInterval(() => {
      if (metrics.open) void load();
    }, 5000);
    metrics.addEventListener('toggle', () => {
      if (metrics.open) void load();
    });
  }

  unmount(): void {
    window.clearInterval(this.timer);
  }

  update(): void {}
}
