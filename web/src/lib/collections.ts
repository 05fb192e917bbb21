// Live reads: TanStack DB collections synced by Electric's client from the edge's /v1/shape
// (same origin, through the gateway), always with the bearer token. Writes go to the API over
// gRPC-Web; the optimistic change stays until the write's transaction id (`txid` on every
// write response) arrives in the collection's shape stream, then the synced row replaces it.
// A refused write throws: TanStack DB rolls the optimistic change back.
import { createCollection } from '@tanstack/svelte-db';
import { SvelteMap } from 'svelte/reactivity';
import { electricCollectionOptions, isChangeMessage } from '@tanstack/electric-db-collection';
import type { Collection } from '@tanstack/db';
import { bearer } from '$lib/session.svelte';
import { proposalsApi, txidOf } from '$lib/api';
import { ProposalStatus } from '$lib/gen/folio/api/v1/proposals_pb';
import { syncFailed, syncOk } from '$lib/net.svelte';

export type ProposalRow = {
  id: string;
  client_id: string;
  title: string;
  status: string;
  currency: string;
  valid_until: string | null;
  version: bigint;
  terms: string;
  content: string;
  subtotal_minor: bigint;
  tax_minor: bigint;
  total_minor: bigint;
  updated_at: string;
  archived_at: string | null;
};

export type ClientRow = { id: string; name: string; company: string; email: string };

export type LineItemRow = {
  id: string;
  proposal_id: string;
  position: number;
  description: string;
  quantity_milli: bigint;
  unit_price_minor: bigint;
  tax_rate_ppm: bigint;
  subtotal_minor: bigint;
  tax_minor: bigint;
};

export type RenditionRow = {
  id: string;
  proposal_id: string;
  proposal_version: bigint;
  status: 'queued' | 'rendering' | 'ready' | 'failed';
  failure_reason: string | null;
  page_count: number | null;
  size_bytes: bigint | null;
  requested_at: string;
  rendered_at: string | null;
};

const SYNC_TIMEOUT_MS = 15_000;

/** fetch for the shape client: reports failures (offline, edge down) and recoveries. */
const trackedFetch: typeof fetch = async (input, init) => {
  try {
    const res = await fetch(input, init);
    if (res.status >= 500) syncFailed();
    else syncOk();
    return res;
  } catch (e) {
    if (!(init?.signal?.aborted)) syncFailed();
    throw e;
  }
};

function shape(table: string, columns: string[], where?: { where: string; params: string[] }) {
  return {
    url: new URL('/v1/shape', location.origin).href,
    params: { table, columns, ...(where ?? {}) },
    headers: { Authorization: bearer },
    fetchClient: trackedFetch,
    // Retry forever (offline, edge restart), but never wait more than 3 s once it is back.
    backoffOptions: { initialDelay: 200, maxDelay: 3_000, multiplier: 2, maxRetries: Infinity },
  };
}

/** One write at a time per proposal: each reads the version the previous one produced. */
const queues = new Map<string, Promise<unknown>>();
function serial<T>(proposalId: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(proposalId) ?? Promise.resolve();
  const next = prev.catch(() => {}).then(fn);
  queues.set(proposalId, next);
  return next;
}

/** Waits until the write is in the shape stream(s): by txid, else by the proposal's version. */
async function settle(res: object, proposalId: string, version: bigint | undefined, others: Collection<any, any, any>[] = []) {
  const txid = txidOf(res);
  if (txid !== undefined) {
    await Promise.all([proposals, ...others].map((c) => (c.utils as any).awaitTxId(txid, SYNC_TIMEOUT_MS)));
    settledBy.txid++;
    return;
  }
  settledBy.version++;
  if (version === undefined) return;
  // Responses without a txid (an older API): wait for the committed version instead.
  if ((proposals.get(proposalId)?.version ?? -1n) >= version) return;
  // (An update message carries only the changed columns besides the key.)
  await proposals.utils.awaitMatch((m) => {
    if (!isChangeMessage(m)) return false;
    const v = m.value as Partial<ProposalRow>;
    return v.id === proposalId && v.version !== undefined && v.version !== null && BigInt(v.version) >= version;
  }, SYNC_TIMEOUT_MS);
}

/** How writes settled (read by the browser tests). */
const settledBy = ((globalThis as { __folioSettled?: { txid: number; version: number } }).__folioSettled ??= { txid: 0, version: 0 });

const STATUS_ENUM: Record<string, ProposalStatus> = {
  draft: ProposalStatus.DRAFT,
  sent: ProposalStatus.SENT,
  viewed: ProposalStatus.VIEWED,
  accepted: ProposalStatus.ACCEPTED,
  declined: ProposalStatus.DECLINED,
  withdrawn: ProposalStatus.WITHDRAWN,
};

/**
 * New proposals: the optimistic row's temporary id → the id the API gave it. The server chooses
 * a proposal's id, so the optimistic row (temporary id) and the synced row (real id) are two
 * keys; the list hides the optimistic one as soon as the real one has arrived.
 */
export const createdIds = new SvelteMap<string, string>();

export type NewProposal = { client_id: string; title: string; currency: string; valid_until: string | null };

/** The optimistic row of a proposal about to be created (CreateProposal makes a draft, version 1). */
export function newProposalRow(p: NewProposal): ProposalRow {
  return {
    id: crypto.randomUUID(),
    client_id: p.client_id,
    title: p.title,
    status: 'draft',
    currency: p.currency,
    valid_until: p.valid_until,
    version: 1n,
    terms: '',
    content: '',
    subtotal_minor: 0n,
    tax_minor: 0n,
    total_minor: 0n,
    updated_at: new Date().toISOString(),
    archived_at: null,
  };
}

export const proposals = createCollection(
  electricCollectionOptions<ProposalRow>({
    id: 'proposals',
    getKey: (r) => r.id,
    shapeOptions: shape('proposals', [
      'id', 'client_id', 'title', 'status', 'currency', 'valid_until', 'version', 'terms', 'content',
      'subtotal_minor', 'tax_minor', 'total_minor', 'updated_at', 'archived_at',
    ]),
    // CreateProposal; the temporary id doubles as the idempotency key, so a retried request
    // never makes a second proposal. Settled when the response's txid reaches the shape.
    onInsert: async ({ transaction }) => {
      for (const m of transaction.mutations) {
        const r = m.modified;
        const res = await proposalsApi.createProposal({
          idempotencyKey: r.id,
          clientId: r.client_id,
          title: r.title,
          currency: r.currency,
          validUntil: r.valid_until ?? '',
          terms: r.terms,
          content: r.content,
        });
        const id = res.proposal?.id;
        if (!id) throw new Error('the server answered without the new proposal');
        createdIds.set(r.id, id);
        await settle(res, id, res.proposal?.version);
      }
    },
    onUpdate: async ({ transaction }) => {
      for (const m of transaction.mutations) {
        const id = m.original.id;
        await serial(id, async () => {
          const expectedVersion = m.original.version;
          const ch = m.changes;
          if (ch.status !== undefined && ch.status !== m.original.status) {
            const res = await proposalsApi.transitionProposal({ id, to: STATUS_ENUM[ch.status], expectedVersion });
            await settle(res, id, res.proposal?.version);
            return;
          }
          const res = await proposalsApi.updateProposal({
            id,
            expectedVersion,
            title: ch.title,
            validUntil: ch.valid_until === undefined ? undefined : (ch.valid_until ?? ''),
            terms: ch.terms,
            content: ch.content,
          });
          await settle(res, id, res.proposal?.version);
        });
      }
    },
  }),
);

export const clients = createCollection(
  electricCollectionOptions<ClientRow>({
    id: 'clients',
    getKey: (r) => r.id,
    shapeOptions: shape('clients', ['id', 'name', 'company', 'email']),
  }),
);

const lineItemCollections = new Map<string, ReturnType<typeof makeLineItems>>();
const renditionCollections = new Map<string, ReturnType<typeof makeRenditions>>();

function makeLineItems(proposalId: string) {
  const c = createCollection(
    electricCollectionOptions<LineItemRow>({
      id: `line_items:${proposalId}`,
      getKey: (r) => r.id,
      shapeOptions: shape(
        'line_items',
        ['id', 'proposal_id', 'position', 'description', 'quantity_milli', 'unit_price_minor', 'tax_rate_ppm', 'subtotal_minor', 'tax_minor'],
        { where: 'proposal_id = $1', params: [proposalId] },
      ),
      onInsert: async ({ transaction }) => {
        for (const m of transaction.mutations) {
          await serial(proposalId, async () => {
            const r = m.modified;
            const res = await proposalsApi.addLineItem({
              proposalId,
              expectedVersion: proposals.get(proposalId)?.version ?? 0n,
              lineItem: {
                description: r.description,
                quantityMilli: r.quantity_milli,
                unitPriceMinor: r.unit_price_minor,
                taxRatePpm: r.tax_rate_ppm,
              },
            });
            await settle(res, proposalId, res.proposal?.version, [c]);
          });
        }
      },
      onUpdate: async ({ transaction }) => {
        for (const m of transaction.mutations) {
          await serial(proposalId, async () => {
            const ch = m.changes;
            const res = await proposalsApi.updateLineItem({
              proposalId,
              lineItemId: m.original.id,
              expectedVersion: proposals.get(proposalId)?.version ?? 0n,
              description: ch.description,
              quantityMilli: ch.quantity_milli,
              unitPriceMinor: ch.unit_price_minor,
              taxRatePpm: ch.tax_rate_ppm,
            });
            await settle(res, proposalId, res.proposal?.version, [c]);
          });
        }
      },
      onDelete: async ({ transaction }) => {
        for (const m of transaction.mutations) {
          await serial(proposalId, async () => {
            const res = await proposalsApi.removeLineItem({
              proposalId,
              lineItemId: m.original.id,
              expectedVersion: proposals.get(proposalId)?.version ?? 0n,
            });
            await settle(res, proposalId, res.proposal?.version, [c]);
          });
        }
      },
    }),
  );
  return c;
}

function makeRenditions(proposalId: string) {
  return createCollection(
    electricCollectionOptions<RenditionRow>({
      id: `pdf_renditions:${proposalId}`,
      getKey: (r) => r.id,
      shapeOptions: shape(
        'pdf_renditions',
        ['id', 'proposal_id', 'proposal_version', 'status', 'failure_reason', 'page_count', 'size_bytes', 'requested_at', 'rendered_at'],
        { where: 'proposal_id = $1', params: [proposalId] },
      ),
    }),
  );
}

/** The open proposal's line items (synced while its page is open). */
export function lineItemsOf(proposalId: string) {
  let c = lineItemCollections.get(proposalId);
  if (!c) lineItemCollections.set(proposalId, (c = makeLineItems(proposalId)));
  return c;
}

export function renditionsOf(proposalId: string) {
  let c = renditionCollections.get(proposalId);
  if (!c) renditionCollections.set(proposalId, (c = makeRenditions(proposalId)));
  return c;
}

/**
 * Stops a proposal's own shapes when its page closes. Over HTTP/1.1 a browser opens at most six
 * connections per origin and every live shape holds one (a long-poll), so shapes of proposals
 * no longer on screen must not linger. Pending writes finish first.
 */
export async function releaseProposal(proposalId: string) {
  await queues.get(proposalId)?.catch(() => {});
  for (const map of [lineItemCollections, renditionCollections] as Map<string, Collection<any, any, any>>[]) {
    const c = map.get(proposalId);
    map.delete(proposalId);
    await c?.cleanup();
  }
}
