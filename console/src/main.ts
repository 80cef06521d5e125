import './style.css';
import { api, type ConsoleSettings, type ScenarioSummary, setUnauthorizedHandler, WRITE_HEADERS } from './api';
import { clear, h } from './dom';
import { connect, onCompleted, store, subscribe } from './store';
import { ConfigPanel } from './views/config';
import { DebriefView } from './views/debrief';
import { ObservabilityView } from './views/observability';
import { primeCatalog, ScenariosView } from './views/scenarios';
import { UserView } from './views/user';

interface View {
  mount(main: HTMLElement): void;
  unmount(): void;
  update(): void;
}

const TABS: [string, string][] = [
  ['scenarios', 'Scenarios'],
  ['user', 'User'],
  ['observability', 'Observability'],
  ['config', 'Config'],
  ['debrief', 'Debrief'],
];

const main = document.getElementById('main') as HTMLElement;
const nav = document.getElementById('nav') as HTMLElement;
const conn = document.getElementById('conn') as HTMLElement;
let settings: ConsoleSettings = { grafana_url: null, grafana_dashboards: [], service_health_url: null };
let current: { name: string; view: View } | null = null;
let signedOut = false;

function tabName(): string {
  const m = /^#\/([a-z]+)/.exec(location.hash);
  return m && TABS.some(([t]) => t === m[1]) ? m[1] : 'scenarios';
}

function make(name: string): View {
  switch (name) {
    case 'user': return new UserView();
    case 'observability': return new ObservabilityView(settings);
    case 'config': return new ConfigPanel();
    case 'debrief': return new DebriefView();
    default: return new ScenariosView();
  }
}

function renderNav(): void {
  const active = tabName();
  clear(nav, h('ul', {}, TABS.map(([id, label]) =>
    h('li', {}, h('a', { href: `#/${id}`, 'aria-current': id === active ? 'page' : null, 'data-tab': id },
      label, id === 'debrief' && store.completed ? [h('span', { class: 'dot', 'aria-hidden': 'true' }), h('span', { class: 'sr-only' }, ' (ready)')] : null)))));
}

/** On a section change (not the first load, so Tab starts at the skip link) focus moves to
 * the new content, which screen readers then announce. */
function route(ev?: Event): void {
  if (signedOut) return;
  const name = tabName();
  renderNav();
  if (current?.name === name && name !== 'config') return;
  current?.view.unmount();
  const view = make(name);
  current = { name, view };
  view.mount(main);
  document.title = `${TABS.find(([t]) => t === name)?.[1]} · ObservaStack`;
  if (ev) main.focus({ preventScroll: true });
}

function renderConn(): void {
  conn.className = store.connected ? 'online' : 'offline';
  conn.textContent = store.connected ? 'live' : store.everConnected ? 'disconnected — reconnecting…' : 'connecting…';
}

function showSignedOut(): void {
  if (signedOut) return;
  signedOut = true;
  current?.view.unmount();
  current = null;
  clear(nav);
  clear(main, h('div', { class: 'view' }, h('h1', {}, 'Sign in'),
    h('p', {}, 'This browser has no valid session. Open the one-time login address that ',
      h('code', {}, 'observastack up'), ' printed when the stack started (each address works once).')));
}

async function start(): Promise<void> {
  setUnauthorizedHandler(showSignedOut);
  // The session check doubles as the catalog load; the settings come in parallel.
  const settingsLoaded = fetch('/console/settings.json', { credentials: 'same-origin' })
    .then(async (resp) => {
      if (resp.ok) settings = (await resp.json()) as ConsoleSettings;
    })
    .catch(() => {
      // Defaults: no Grafana, no Service Health view.
    });
  try {
    primeCatalog(await api<ScenarioSummary[]>('GET', '/api/scenarios'));
  } catch {
    if (signedOut) return;
  }
  await settingsLoaded;
  subscribe(() => {
    renderConn();
    current?.view.update();
    renderNav();
  });
  onCompleted(() => {
    if (tabName() !== 'debrief') location.hash = '#/debrief';
  });
  window.addEventListener('hashchange', route);
  renderConn();
  route();
  connect();
  const logout = h('button', { type: 'button', class: 'link' }, 'Sign out');
  logout.addEventListener('click', async () => {
    await fetch('/console/logout', { method: 'POST', headers: { ...WRITE_HEADERS }, credentials: 'same-origin' });
    showSignedOut();
  });
  conn.after(logout);
}

void start();
