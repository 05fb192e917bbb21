// gRPC-Web clients (connect-web → the gateway → tonic-web), generated from proto/ by buf +
// protoc-gen-es v2 at build time (src/lib/gen, git-ignored). Same origin: no CORS preflight.
import { Code, ConnectError, createClient, type Interceptor } from '@connectrpc/connect';
import { createGrpcWebTransport } from '@connectrpc/connect-web';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import { ProposalService } from '$lib/gen/folio/api/v1/proposals_pb';
import { ClientService } from '$lib/gen/folio/api/v1/clients_pb';
import { bearer } from '$lib/session.svelte';
import { OfflineError } from '$lib/net.svelte';

const auth: Interceptor = (next) => async (req) => {
  req.header.set('authorization', bearer());
  return next(req);
};

export const transport = createGrpcWebTransport({
  baseUrl: typeof location === 'undefined' ? 'http://localhost' : location.origin,
  interceptors: [auth],
  defaultTimeoutMs: 15_000,
});

export const proposalsApi = createClient(ProposalService, transport);
export const clientsApi = createClient(ClientService, transport);

/**
 * The Postgres transaction id of a write's commit (`txid` on every write response, the same
 * number shape-edge puts in each change message's `headers.txids`); undefined when the
 * response has none (0: the call committed nothing, e.g. an idempotent repeat).
 */
export function txidOf(res: object): number | undefined {
  const v = (res as { txid?: number | bigint }).txid;
  if (v === undefined || v === null) return undefined;
  const n = Number(v);
  return n > 0 ? n : undefined;
}

type ErrorInfo = { reason: string; metadata: Record<string, string> };
export type FieldViolation = { field: string; description: string };

function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  const r = new BinaryReader(bytes);
  const info: ErrorInfo = { reason: '', metadata: {} };
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1) info.reason = r.string();
    else if (no === 3) {
      const e = new BinaryReader(r.bytes());
      let k = '';
      let v = '';
      while (e.pos < e.len) {
        const [n2, w2] = e.tag();
        if (n2 === 1) k = e.string();
        else if (n2 === 2) v = e.string();
        else e.skip(w2);
      }
      info.metadata[k] = v;
    } else r.skip(wt);
  }
  return info;
}

function decodeBadRequest(bytes: Uint8Array): FieldViolation[] {
  const r = new BinaryReader(bytes);
  const out: FieldViolation[] = [];
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1) {
      const f = new BinaryReader(r.bytes());
      const v: FieldViolation = { field: '', description: '' };
      while (f.pos < f.len) {
        const [n2, w2] = f.tag();
        if (n2 === 1) v.field = f.string();
        else if (n2 === 2) v.description = f.string();
        else f.skip(w2);
      }
      out.push(v);
    } else r.skip(wt);
  }
  return out;
}

const FIELD_NAMES: Record<string, string> = {
  client_id: 'Client',
  title: 'Title',
  currency: 'Currency',
  valid_until: 'Valid until',
  quantity_milli: 'Quantity',
  unit_price_minor: 'Unit price',
  tax_rate_ppm: 'Tax rate',
  description: 'Description',
  line_items: 'Line items',
  terms: 'Terms',
};

function describeViolation(v: FieldViolation): string {
  const field = v.field.split('.').pop() ?? v.field;
  // The API refuses a client that is not (or no longer) one of the agency's.
  if (field === 'client_id' && /^no client/.test(v.description)) {
    return 'Client: this client no longer exists (someone may have just deleted it); choose another';
  }
  return `${FIELD_NAMES[field] ?? field}: ${v.description}`;
}

const STATUS_WORDS: Record<string, string> = {
  draft: 'a draft',
  sent: 'sent',
  viewed: 'viewed',
  accepted: 'accepted',
  declined: 'declined',
  withdrawn: 'withdrawn',
};

/**
 * The field violations of an INVALID_ARGUMENT (`google.rpc.BadRequest` details), as the API
 * names the fields (`url`, `settings[2].enabled`); empty for any other error.
 */
export function violationsOf(err: unknown): FieldViolation[] {
  if (!(err instanceof ConnectError)) return [];
  const out: FieldViolation[] = [];
  for (const d of err.details) {
    if ('type' in d && d.type === 'google.rpc.BadRequest') out.push(...decodeBadRequest(d.value));
  }
  return out;
}

/** A refused or failed write, in words a user understands. */
export function explain(err: unknown): string {
  if (err instanceof OfflineError) return err.message;
  if (!(err instanceof ConnectError)) {
    if (err instanceof TypeError && /fetch|network/i.test(err.message)) {
      return 'The server could not be reached, so nothing was saved. Check the connection and try again.';
    }
    if (err instanceof Error && /timed? ?out/i.test(err.message)) {
      return 'Saved, but the change has not come back from the server yet; it will show up once it does.';
    }
    return `Something went wrong, nothing was saved: ${err instanceof Error ? err.message : String(err)}`;
  }
  const e = err;
  const infos: ErrorInfo[] = [];
  const violations: FieldViolation[] = [];
  for (const d of e.details) {
    if (!('type' in d)) continue;
    if (d.type === 'google.rpc.ErrorInfo') infos.push(decodeErrorInfo(d.value));
    if (d.type === 'google.rpc.BadRequest') violations.push(...decodeBadRequest(d.value));
  }
  const info = infos[0];
  if (info?.reason === 'STALE_VERSION' || e.code === Code.Aborted) {
    return 'Someone else changed this proposal a moment ago, so your change was not saved. The latest version is shown now; please make your change again.';
  }
  if (info?.reason === 'ILLEGAL_TRANSITION') {
    const from = STATUS_WORDS[info.metadata.from] ?? info.metadata.from;
    const to = info.metadata.to;
    return `This proposal is ${from}, so it cannot be moved to “${to}”. Nothing was changed.`;
  }
  switch (e.code) {
    case Code.InvalidArgument:
      if (violations.length) {
        return 'Not saved: ' + violations.map(describeViolation).join('; ') + '.';
      }
      return `Not saved: ${e.rawMessage}.`;
    case Code.FailedPrecondition:
      if (/frozen|only drafts|not a draft/i.test(e.rawMessage)) return 'Only drafts can be edited: move the proposal back to draft first. Nothing was changed.';
      return `Not possible right now: ${e.rawMessage}.`;
    case Code.PermissionDenied:
      return 'Your role can view proposals but not change them.';
    case Code.Unauthenticated:
      return 'Your session has expired: sign in again.';
    case Code.NotFound:
      return 'This proposal no longer exists (or belongs to another agency).';
    case Code.Unavailable:
    case Code.Unknown:
    case Code.DeadlineExceeded:
      return 'The server could not be reached, so nothing was saved. Check the connection and try again.';
    default:
      return `Not saved: ${e.rawMessage}`;
  }
}
