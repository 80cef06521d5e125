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
    if (s.service_health_url) {
      parts.push(h('p', {}, 'Service Health (error rate, latency p50/p95/p99 and throughput per service, grouped by route): ',
        h('a', { href: s.service_health_url, target: '_blank', rel: 'noopener' }, 'open Service Health')));
    }
    if (s.grafana_url) {
      const boards = s.grafana_dashboards.length ? s.grafana_dashboards : [{ title: 'Grafana', url: s.grafana_url }];
      const frame = h('iframe', { title: `Grafana: ${boards[0].title}`, src: boards[0].url, class: 'grafana' });
      const pick = h('select', { id: 'dashboard' }, boards.map((b) => h('option', { value: b.url }, b.title)));
      pick.addEventListener('change', () => {
        frame.src = pick.value;
        frame.title = `Grafana: ${pick.selectedOptions[0]?.textContent ?? ''}`;
      });
      parts.push(h('p', { class: 'row' }, h('label', { for: 'dashboard' }, 'Dashboard '), pick,
        h('a', { href: s.grafana_url, target: '_blank', rel: 'noopener' }, 'open Grafana')), frame);
      clear(this.root, parts);
      return;
    }
    const box = h('div', { class: 'grid' });
    parts.push(
      h('p', { class: 'muted' },
        s.service_health_url ? 'Below, each service’s own metrics.' : 'No Grafana is configured here (the native launch); each service’s own metrics follow. The built-in Service Health view appears here once the facts service is running.'),
      box,
    );
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
    this.timer = window.setInterval(() => void load(), 5000);
  }

  unmount(): void {
    window.clearInterval(this.timer);
  }

  update(): void {}
}
