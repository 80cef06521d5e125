// Success conditions (`checkout.success_ratio >= 0.99`) evaluated on the latest SLI snapshot,
// for the live check marks. The orchestrator's verdict stays the authority (state
// `recovering`/`resolved`); this only shows which condition holds right now.
import type { Snapshot, Sli } from './api';

const SHAPE = /^\s*([a-z_]+)\.([a-z0-9_]+)\s*(<=|>=|==|!=|<|>)\s*(-?[0-9.]+)\s*$/;

function sli(s: Sli, name: string): number | null {
  if (s.completed + s.failed === 0) return null;
  if (name === 'error_ratio') return s.success_ratio === null ? null : 1 - s.success_ratio;
  const v = (s as unknown as Record<string, number | null>)[name];
  return typeof v === 'number' ? v : null;
}

/** true / false, or null when the subject had no traffic in the window (never holds). */
export function holds(condition: string, snap: Snapshot | null): boolean | null {
  const m = SHAPE.exec(condition);
  if (!m || !snap) return null;
  const [, subject, name, op, num] = m;
  const s = subject === 'all' ? snap.all : snap.journeys[subject];
  if (!s) return null;
  const v = sli(s, name);
  if (v === null) return null;
  const n = Number(num);
  switch (op) {
    case '<': return v < n;
    case '<=': return v <= n;
    case '>': return v > n;
    case '>=': return v >= n;
    case '==': return v === n;
    case '!=': return v !== n;
    default: return null;
  }
}
