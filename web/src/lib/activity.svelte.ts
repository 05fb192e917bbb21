// A proposal's activity: the edge's read-only durable stream /v1/stream/proposals/<id>/activity
// (wal-ingest's change events of that proposal, JSON), followed live with
// @durable-streams/client. What was shown and the offset reached are kept in localStorage, so a
// reload shows the same feed at once and resumes from that offset: nothing is read twice.
import { stream } from '@durable-streams/client';
import { bearer, session } from '$lib/session.svelte';
import { syncFailed, syncOk } from '$lib/net.svelte';

type Row = Record<string, string | null | { unchanged_toast: boolean }>;
export type ChangeEvent = {
  offset: string;
  xid: number;
  commit_time: string | null;
  operation: string;
  new_row: Row | null;
  old_row: Row | null;
};
export type ActivityEntry = { offset: string; xid: number; at: string | null; text: string };

const LABELS: Record<string, string> = {
  sent: 'Sent to the client',
  viewed: 'Viewed by the client',
  accepted: 'Accepted by the client',
  declined: 'Declined by the client',
  withdrawn: 'Withdrawn',
  draft: 'Moved back to draft',
};

function str(v: Row[string] | undefined): string | null {
  return typeof v === 'string' ? v : null;
}

/** One line per change event of the proposal, in plain words ('' when nothing visible changed). */
export function describe(e: ChangeEvent): string {
  const n = e.new_row ?? {};
  const o = e.old_row ?? {};
  if (e.operation === 'insert') return `Created “${str(n.title) ?? ''}”`;
  if (e.operation === 'delete') return 'Deleted';
  if (e.operation !== 'update') return '';
  const parts: string[] = [];
  if (str(n.status) !== str(o.status) && str(n.status)) parts.push(LABELS[str(n.status)!] ?? `Now ${str(n.status)}`);
  if (str(n.title) !== str(o.title)) parts.push(`Renamed to “${str(n.title)}”`);
  if (str(n.total_minor) !== str(o.total_minor)) parts.push('Line items changed');
  if (str(n.valid_until) !== str(o.valid_until)) parts.push(`Valid until ${str(n.valid_until) ?? '—'}`);
  if (str(n.terms) !== str(o.terms)) parts.push('Terms changed');
  if (str(n.archived_at) !== str(o.archived_at)) parts.push(str(n.archived_at) ? 'Archived' : 'Unarchived');
  return parts.join(' · ');
}

type Saved = { offset: string; entries: ActivityEntry[] };
const MAX_ENTRIES = 200;

function storageKey(proposalId: string) {
  return `folio.activity.${session.user?.agency_id ?? decodeAgency()}.${proposalId}`;
}
function decodeAgency() {
  try {
    return JSON.parse(atob((session.user?.token ?? '').split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).agency_id;
  } catch {
    return 'unknown';
  }
}

export function followActivity(proposalId: string) {
  const key = storageKey(proposalId);
  let saved: Saved = { offset: '-1', entries: [] };
  try {
    saved = { ...saved, ...JSON.parse(localStorage.getItem(key) ?? '{}') };
  } catch {
    /* a corrupt entry: start over */
  }
  const state = $state({ entries: saved.entries, offset: saved.offset, resumedFrom: saved.offset, live: false, error: '' });
  const seen = new Set(saved.entries.map((e) => e.offset));
  const abort = new AbortController();

  const fetchClient: typeof fetch = async (input, init) => {
    try {
      const res = await fetch(input, init);
      if (res.status >= 500) syncFailed();
      else syncOk();
      return res;
    } catch (e) {
      if (!abort.signal.aborted) syncFailed();
      throw e;
    }
  };

  function apply(events: readonly ChangeEvent[], offset: string) {
    let entries = state.entries;
    for (const e of events) {
      if (seen.has(e.offset)) continue; // never shown twice
      seen.add(e.offset);
      const text = describe(e);
      if (!text) continue;
      const last = entries[entries.length - 1];
      // Events of one commit (a row written twice in one transaction) read as one entry.
      if (last && last.xid === e.xid) {
        const merged = [...new Set([...last.text.split(' · '), ...text.split(' · ')])].join(' · ');
        entries = [...entries.slice(0, -1), { ...last, text: merged }];
      } else {
        entries = [...entries, { offset: e.offset, xid: e.xid, at: e.commit_time, text }];
      }
    }
    state.entries = entries.slice(-MAX_ENTRIES);
    state.offset = offset;
    localStorage.setItem(key, JSON.stringify({ offset, entries: state.entries } satisfies Saved));
  }

  async function run(attempt = 0): Promise<void> {
    try {
      const res = await stream<ChangeEvent>({
        url: new URL(`/v1/stream/proposals/${proposalId}/activity`, location.origin),
        headers: { Authorization: bearer },
        offset: state.offset,
        // Long-poll: one request per batch, resumable from the offset after any failure.
        live: 'long-poll',
        signal: abort.signal,
        fetch: fetchClient,
        backoffOptions: { initialDelay: 200, maxDelay: 3_000, multiplier: 2, maxRetries: Infinity },
        onError: () => (abort.signal.aborted ? undefined : {}),
        warnOnHttp: false,
      });
      state.error = '';
      await new Promise<void>((resolve, reject) => {
        res.subscribeJson<ChangeEvent>((batch) => {
          apply(batch.items, batch.offset);
          if (batch.upToDate) state.live = true;
        });
        res.closed.then(resolve, reject);
      });
    } catch (e) {
      if (abort.signal.aborted) return;
      state.live = false;
      state.error = 'Activity is reconnecting…';
    }
    if (abort.signal.aborted) return;
    // The stream ended or failed: go on from the saved offset.
    await new Promise((r) => setTimeout(r, Math.min(3_000, 200 * 2 ** attempt)));
    return run(Math.min(attempt + 1, 4));
  }
  run();
  return { state, stop: () => abort.abort() };
}
