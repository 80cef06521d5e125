// Each service's `/config` as a form built from its JSON Schema. Nothing is validated in the
// browser: the service's own 400 (field + rule) is shown next to the field it names, so the
// form never disagrees with the server. Changes are shown as a diff and sent as one merge patch.
// The console's session is a learner's: the services that refuse a learner every field (the
// runner, the control gateway) are shown read-only with the services' reason, and a 403 from any
// write shows the service's message and the fields it names, which then stay read-only.
import { api, ApiError, type FieldError } from '../api';
import { clear, fmtTime, fmtValue, h } from '../dom';
import { store } from '../store';

type Schema = Record<string, unknown> & {
  type?: string | string[];
  properties?: Record<string, Schema>;
  enum?: unknown[];
  oneOf?: Schema[];
  anyOf?: Schema[];
  $ref?: string;
  description?: string;
  minimum?: number;
  maximum?: number;
  const?: unknown;
  additionalProperties?: unknown;
};

interface ConfigView {
  service: string;
  revision: number;
  updated_at: string;
  values: Record<string, unknown>;
}

interface ChangeRecord {
  revision: number;
  at: string;
  actor: string;
  role: string;
  client?: string;
  through?: string | null;
  action: string;
  changes: { field: string; old: unknown; new: unknown }[];
}

/** Services whose every field is instructor-only, with the reason their 403 gives a learner
 * (the same words as the services' `instructor_only_reason`). The console's session is always a
 * learner's, so these are shown, never offered for editing. */
export const INSTRUCTOR_ONLY_SERVICES: Readonly<Record<string, string>> = {
  runner: 'during a run the offered load is part of the incident: only the instructor role (the orchestrator) may change the runner',
  'gateway-control': 'the control gateway carries the control path itself: a learner change could cut the learner off from it',
};

/** What a service refused this page with 403 (its message and the fields it named), so those
 * fields stay read-only for the rest of the session. */
const refusals = new Map<string, { message: string; fields: string[] }>();

function covers(refused: string, path: string): boolean {
  return refused === path || path.startsWith(`${refused}.`) || refused.startsWith(`${path}.`);
}

interface Field {
  path: string;
  kind: 'number' | 'integer' | 'string' | 'enum' | 'boolean' | 'json';
  input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
  error: HTMLElement;
  original: unknown;
}

/** Shown, not offered: read-only text, disabled choices. */
function lock(f: Field): void {
  if (f.input instanceof HTMLSelectElement || (f.input instanceof HTMLInputElement && f.input.type === 'checkbox')) f.input.disabled = true;
  else f.input.readOnly = true;
  f.input.dataset.locked = '';
}

function get(obj: unknown, path: string[]): unknown {
  let cur = obj;
  for (const p of path) cur = (cur as Record<string, unknown> | undefined)?.[p];
  return cur;
}

function domId(path: string): string {
  return `f-${path.replace(/[^a-zA-Z0-9_-]/g, '-')}`;
}

export class ConfigPanel {
  private root = h('div', { class: 'view' });
  private picker = h('select', { id: 'service' });
  private formBox = h('div');
  private historyBox = h('section', { 'aria-labelledby': 'history-h' });
  private status = h('p', { class: 'message', role: 'status', 'aria-live': 'polite' });
  private fields: Field[] = [];
  private defs: Record<string, Schema> = {};

  mount(main: HTMLElement): void {
    clear(this.root, h('h1', {}, 'Config'),
      h('p', { class: 'row' }, h('label', { for: 'service' }, 'Service '), this.picker),
      this.status, this.formBox, this.historyBox);
    clear(main, this.root);
    this.picker.addEventListener('change', () => {
      location.hash = `#/config/${this.picker.value}`;
    });
    void this.loadServices();
  }

  private service = '';
  private revision = 0;
  private seenEvents = store.events.length;

  unmount(): void {}

  /** A change made elsewhere (the scenario's fault, the CLI) shows up in the history at once;
   * the form keeps the learner's edits and says that it is behind. */
  update(): void {
    const fresh = store.events.slice(this.seenEvents);
    this.seenEvents = store.events.length;
    // Changes up to the revision the form shows (the learner's own Apply included) are not news.
    const mine = fresh.filter((e) => e.kind === 'config_change' && e.service === this.service && (e.revision ?? 0) > this.revision);
    if (!mine.length || !this.service) return;
    void this.loadHistory(this.service);
    const fields = [...new Set(mine.map((e) => e.field))].join(', ');
    this.status.textContent = `${this.service} changed elsewhere (${fields}); press “Discard edits” to load the current values.`;
  }

  private wanted(): string | null {
    const m = /^#\/config\/([^/?]+)/.exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }

  private async loadServices(): Promise<void> {
    try {
      const { services } = await api<{ services: { name: string; config?: string }[] }>('GET', '/api/services');
      const names = services.filter((s) => s.config && s.name !== 'orchestrator').map((s) => s.name);
      clear(this.picker, names.map((n) => h('option', { value: n }, n)));
      const name = this.wanted() ?? (names.includes('shop') ? 'shop' : names[0]);
      if (name) {
        this.picker.value = name;
        await this.load(name);
      }
    } catch (err) {
      this.status.textContent = err instanceof ApiError ? err.message : 'cannot list the services';
    }
  }

  /** Counts loads, so a slow answer never replaces the form a later load (another service, a
   * second "Discard edits") already showed. */
  private loads = 0;

  private async load(service: string): Promise<void> {
    const ticket = ++this.loads;
    this.service = service;
    this.status.textContent = '';
    // Until the fresh values arrive the old form is still on screen: edits made to it now would
    // be thrown away, so it says it is loading and takes none.
    this.formBox.setAttribute('aria-busy', 'true');
    this.formBox.querySelector('form')?.setAttribute('inert', '');
    const base = `/api/services/${encodeURIComponent(service)}/config`;
    let view: ConfigView;
    let schema: Schema;
    try {
      [view, schema] = await Promise.all([api<ConfigView>('GET', base), api<Schema>('GET', `${base}/schema`)]);
    } catch (err) {
      if (ticket === this.loads) {
        this.formBox.removeAttribute('aria-busy');
        this.formBox.querySelector('form')?.removeAttribute('inert');
        this.status.textContent = `Could not load ${service}'s configuration: ${err instanceof ApiError ? err.message : 'the request failed'}.`;
      }
      return;
    }
    if (ticket !== this.loads) return;
    this.defs = ((schema.$defs ?? schema.definitions ?? {}) as Record<string, Schema>);
    this.revision = view.revision;
    this.fields = [];
    const form = h('form', { novalidate: true, 'aria-labelledby': 'form-h', 'data-service': service });
    const body = this.object(schema, [], view.values);
    const diffBox = h('div', { class: 'diff', 'aria-live': 'polite' });
    const locked = INSTRUCTOR_ONLY_SERVICES[service];
    const refused = refusals.get(service);
    let notice: Node | null = null;
    if (locked) {
      for (const f of this.fields) lock(f);
      notice = h('p', { class: 'notice', 'data-locked': service, id: 'locked-note' }, h('strong', {}, 'Instructor only. '),
        `A learner may not change any field of ${service}; the service refuses it (403) because ${locked}. The form shows its live values.`);
    } else if (refused) {
      for (const f of this.fields) if (refused.fields.some((r) => covers(r, f.path))) lock(f);
      notice = h('p', { class: 'notice', 'data-refused': service }, h('strong', {}, 'Read-only for your role: '),
        refused.fields.map((f, i) => [i ? ', ' : '', h('code', {}, f)]), `. ${service} refused a change of them (403): ${refused.message}.`);
    }
    const review = h('button', { type: 'submit', class: 'primary' }, 'Review changes');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (!locked) this.review(service, diffBox);
    });
    clear(form, h('h2', { id: 'form-h' }, `${service} `, h('span', { class: 'muted small' }, `revision ${view.revision}, updated ${fmtTime(view.updated_at)}`)),
      notice, body,
      locked ? null : h('p', { class: 'row' }, review, h('button', { type: 'button', onclick: () => void this.load(service) }, 'Discard edits')),
      diffBox);
    clear(this.formBox, form);
    this.formBox.removeAttribute('aria-busy');
    await this.loadHistory(service);
  }

  private resolve(s: Schema): Schema {
    let cur = s;
    for (let i = 0; i < 8 && cur.$ref; i++) {
      const name = cur.$ref.split('/').pop() ?? '';
      cur = { ...this.defs[name], ...Object.fromEntries(Object.entries(cur).filter(([k]) => k !== '$ref')) };
    }
    return cur;
  }

  private object(schema: Schema, path: string[], values: unknown): Node[] {
    const s = this.resolve(schema);
    const out: Node[] = [];
    for (const [key, sub0] of Object.entries(s.properties ?? {})) {
      const sub = this.resolve(sub0);
      const p = [...path, key];
      if (sub.properties) {
        out.push(h('fieldset', {}, h('legend', {}, key), sub.description ? h('p', { class: 'muted small' }, sub.description) : null,
          this.object(sub, p, values)));
      } else {
        out.push(this.field(sub, p, get(values, p)));
      }
    }
    return out;
  }

  private field(s: Schema, path: string[], value: unknown): Node {
    const dotted = path.join('.');
    const id = domId(dotted);
    const error = h('p', { class: 'field-error', id: `${id}-err`, 'data-error-for': dotted });
    const choices = s.enum ?? (s.oneOf?.every((o) => 'const' in this.resolve(o)) ? s.oneOf.map((o) => this.resolve(o).const) : null);
    const type = Array.isArray(s.type) ? s.type.find((t) => t !== 'null') : s.type;
    let kind: Field['kind'];
    let input: Field['input'];
    const common = { id, name: dotted, 'aria-describedby': `${id}-help ${id}-err`, 'data-field': dotted };
    if (choices) {
      kind = 'enum';
      input = h('select', common, choices.map((c) => h('option', { value: String(c) }, String(c))));
      input.value = String(value);
    } else if (type === 'integer' || type === 'number') {
      kind = type;
      input = h('input', { ...common, type: 'text', inputmode: type === 'integer' ? 'numeric' : 'decimal' });
      input.value = value === undefined || value === null ? '' : String(value);
    } else if (type === 'boolean') {
      kind = 'boolean';
      input = h('input', { ...common, type: 'checkbox' });
      (input as HTMLInputElement).checked = value === true;
    } else if (type === 'string') {
      kind = 'string';
      input = h('input', { ...common, type: 'text' });
      input.value = value === undefined || value === null ? '' : String(value);
    } else {
      kind = 'json';
      input = h('textarea', { ...common, rows: 3, spellcheck: 'false' });
      input.value = JSON.stringify(value ?? null, null, 1);
      // Fault fields belong to the scenario: a learner repairs around them, never clears them.
      if (/instructor/i.test(s.description ?? '')) (input as HTMLTextAreaElement).readOnly = true;
    }
    const range = [s.minimum !== undefined ? `min ${s.minimum}` : '', s.maximum !== undefined ? `max ${s.maximum}` : ''].filter(Boolean).join(', ');
    const help = h('p', { class: 'muted small', id: `${id}-help` }, [s.description ?? '', range ? ` (${range})` : ''].join(''));
    this.fields.push({ path: dotted, kind, input, error, original: value });
    return h('div', { class: 'field' }, h('label', { for: id }, path[path.length - 1]), input, help, error);
  }

  private read(f: Field): { ok: true; value: unknown } | { ok: false } {
    const raw = f.input.value;
    switch (f.kind) {
      case 'boolean':
        return { ok: true, value: (f.input as HTMLInputElement).checked };
      case 'integer':
      case 'number': {
        // Anything that is not a plain number goes to the server as typed, so its message
        // (type, range) is the one the learner reads.
        const t = raw.trim();
        // An empty box is "no value" (optional fields such as the runner's `target_rate`).
        if (t === '') return { ok: true, value: f.original === undefined ? undefined : null };
        if (Number.isFinite(Number(t))) return { ok: true, value: Number(t) };
        return { ok: true, value: t };
      }
      case 'json':
        try {
          return { ok: true, value: JSON.parse(raw) };
        } catch {
          f.error.textContent = 'not valid JSON';
          return { ok: false };
        }
      default:
        return { ok: true, value: raw === '' && (f.original === null || f.original === undefined) ? f.original : raw };
    }
  }

  private changes(): { field: Field; value: unknown }[] | null {
    const out: { field: Field; value: unknown }[] = [];
    let ok = true;
    for (const f of this.fields) {
      f.error.textContent = '';
      f.input.removeAttribute('aria-invalid');
      const r = this.read(f);
      if (!r.ok) {
        ok = false;
        continue;
      }
      if (JSON.stringify(r.value) !== JSON.stringify(f.original)) out.push({ field: f, value: r.value });
    }
    return ok ? out : null;
  }

  private review(service: string, box: HTMLElement): void {
    const changes = this.changes();
    if (changes === null) return;
    if (!changes.length) {
      clear(box, h('p', { class: 'muted' }, 'Nothing changed.'));
      return;
    }
    const patch: Record<string, unknown> = {};
    for (const { field, value } of changes) {
      const parts = field.path.split('.');
      let cur = patch;
      for (const p of parts.slice(0, -1)) cur = (cur[p] ??= {}) as Record<string, unknown>;
      cur[parts[parts.length - 1]] = value;
    }
    const apply = h('button', { type: 'button', class: 'primary' }, `Apply ${changes.length} change${changes.length > 1 ? 's' : ''}`);
    apply.addEventListener('click', () => void this.apply(service, patch, box));
    clear(box,
      h('h3', {}, 'Review before applying'),
      h('table', { class: 'diff-table' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'field'), h('th', { scope: 'col' }, 'now'), h('th', { scope: 'col' }, 'after'))),
        h('tbody', {}, changes.map(({ field, value }) =>
          h('tr', {}, h('th', { scope: 'row' }, field.path), h('td', { class: 'old' }, h('del', {}, fmtValue(field.original))),
            h('td', { class: 'new' }, h('ins', {}, fmtValue(value))))))),
      h('p', { class: 'row' }, apply, h('button', { type: 'button', onclick: () => clear(box) }, 'Cancel')));
    apply.focus();
  }

  private async apply(service: string, patch: Record<string, unknown>, box: HTMLElement): Promise<void> {
    try {
      const view = await api<ConfigView>('PATCH', `/api/services/${encodeURIComponent(service)}/config`, patch);
      await this.load(service);
      this.status.textContent = `Applied: ${service} is at revision ${view.revision}.`;
    } catch (err) {
      if (!(err instanceof ApiError)) {
        clear(box, h('p', { class: 'message' }, 'The change could not be sent.'));
        return;
      }
      if (err.status === 403) {
        // The role may not change these fields: the service's message says why.
        const fields = err.details.map((d) => d.field);
        if (fields.length) refusals.set(service, { message: err.message, fields });
        clear(box, h('div', { class: 'notice refused', role: 'alert', 'data-forbidden': '' },
          h('p', {}, h('strong', {}, `Refused (403): `), `${err.message}. Nothing was changed.`),
          fields.length ? h('p', {}, 'Fields your role may not change: ', fields.map((f, i) => [i ? ', ' : '', h('code', { 'data-forbidden-field': f }, f)])) : null));
      } else {
        clear(box, h('p', { class: 'message', role: 'alert' }, `Not applied (${err.status}): ${err.message}. Nothing was changed.`));
      }
      this.showErrors(err.details);
    }
  }

  private showErrors(details: FieldError[]): void {
    let first: Field | undefined;
    for (const d of details) {
      const f = this.fields.find((x) => x.path === d.field) ?? this.fields.find((x) => d.field.startsWith(`${x.path}.`));
      if (!f) continue;
      f.error.textContent = `${d.message} (${d.rule})`;
      f.input.setAttribute('aria-invalid', 'true');
      first ??= f;
    }
    first?.input.focus();
  }

  private async loadHistory(service: string): Promise<void> {
    let records: ChangeRecord[] = [];
    try {
      const data = await api<ChangeRecord[] | { changes?: ChangeRecord[]; history?: ChangeRecord[] }>('GET', `/api/services/${encodeURIComponent(service)}/config/history?limit=50`);
      records = Array.isArray(data) ? data : data.changes ?? data.history ?? [];
    } catch {
      // Shown as an empty history.
    }
    const rows = records.flatMap((r) => (r.changes.length ? r.changes : [{ field: '(all fields)', old: null, new: null }]).map((c) =>
      h('tr', {}, h('td', {}, fmtTime(r.at)), h('td', {}, `${r.actor} (${r.role})`),
        h('td', { 'data-client': r.client ?? '' }, r.client ?? 'unknown', h('span', { class: 'muted small' }, r.through ? `, through ${r.through}` : ', direct')),
        h('td', {}, `${r.action} r${r.revision}`),
        h('th', { scope: 'row' }, c.field), h('td', {}, fmtValue(c.old), ' → ', fmtValue(c.new)))));
    clear(this.historyBox, h('h2', { id: 'history-h' }, 'Change history'),
      rows.length
        ? h('div', { class: 'scroll', tabindex: 0, role: 'region', 'aria-label': 'Change history table' }, h('table', { class: 'history' },
            h('thead', {}, h('tr', {}, ['when', 'who', 'client', 'change', 'field', 'old → new'].map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, rows)))
        : h('p', { class: 'muted' }, 'No changes since the service started.'));
  }
}
