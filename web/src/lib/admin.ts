// The agency administration clients (proto/folio/api/v1/admin.proto, issue 21) and how their
// refusals read. Members, webhooks and agency defaults are admins-only on the server
// (PERMISSION_DENIED otherwise); a user's own email preferences are everyone's.
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcWebTransport } from '@connectrpc/connect-web';
import { timestampDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import {
  DeliveryStatus,
  InvitationService,
  MemberRole,
  MemberService,
  NotificationPreferenceService,
  WebhookService,
} from '$lib/gen/folio/api/v1/admin_pb';
import { transport, violationsOf } from '$lib/api';
import { OfflineError } from '$lib/net.svelte';
import { session } from '$lib/session.svelte';

export const webhooksApi = createClient(WebhookService, transport);
export const membersApi = createClient(MemberService, transport);
export const preferencesApi = createClient(NotificationPreferenceService, transport);

// The invitation link's token is the credential: this call carries no bearer token (the
// invitee has none yet), so it has a transport without the session's interceptor.
export const invitationsApi = createClient(
  InvitationService,
  createGrpcWebTransport({
    baseUrl: typeof location === 'undefined' ? 'http://localhost' : location.origin,
    defaultTimeoutMs: 15_000,
  }),
);

export function isAdmin(): boolean {
  return session.user?.role === 'admin';
}

export const ROLES: { value: MemberRole; label: string; what: string }[] = [
  { value: MemberRole.VIEWER, label: 'Viewer', what: 'reads proposals' },
  { value: MemberRole.EDITOR, label: 'Editor', what: 'writes proposals, clients and templates' },
  { value: MemberRole.ADMIN, label: 'Admin', what: 'also manages members, webhooks and email defaults' },
];
export const roleLabel = (r: MemberRole) => ROLES.find((x) => x.value === r)?.label ?? 'Unknown role';

export const DELIVERY_LABEL: Record<DeliveryStatus, string> = {
  [DeliveryStatus.UNSPECIFIED]: 'Unknown',
  [DeliveryStatus.PENDING]: 'Pending',
  [DeliveryStatus.DELIVERING]: 'Delivering',
  [DeliveryStatus.DELIVERED]: 'Delivered',
  [DeliveryStatus.FAILED]: 'Failed',
  [DeliveryStatus.SKIPPED]: 'Skipped',
};

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
/** A timestamp in the reader's zone; '—' when unset. */
export function when(t: Timestamp | undefined): string {
  return t ? dateTime.format(timestampDate(t)) : '—';
}
const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
/** The day of a timestamp in the reader's zone; '—' when unset. */
export function day(t: Timestamp | undefined): string {
  return t ? dateOnly.format(timestampDate(t)) : '—';
}

/**
 * What the server refused and why: one sentence for the page, and the field violations keyed
 * by the field as the API names it (`url`, `email`, `settings[0].enabled`), so each form can
 * show them next to their input.
 */
export type Refusal = { text: string; fields: Record<string, string> };

const FIELD_LABEL: Record<string, string> = {
  url: 'URL',
  description: 'Description',
  email: 'Email',
  role: 'Role',
  name: 'Name',
  since: 'Since',
  grace_period: 'Grace period',
  valid_for: 'Valid for',
};

export function refusal(err: unknown, what: string): Refusal {
  if (err instanceof OfflineError) return { text: err.message, fields: {} };
  if (!(err instanceof ConnectError)) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/fetch|network/i.test(msg)) return { text: `${what}: the server could not be reached. Check the connection and try again.`, fields: {} };
    return { text: `${what}: something went wrong (${msg}).`, fields: {} };
  }
  const fields: Record<string, string> = {};
  for (const v of violationsOf(err)) fields[v.field] = fields[v.field] ? `${fields[v.field]}; ${v.description}` : v.description;
  const sentence = (s: string) => s.replace(/\.?$/, '.');
  switch (err.code) {
    case Code.InvalidArgument: {
      const listed = Object.entries(fields).map(([f, d]) => `${FIELD_LABEL[f.replace(/\[\d+\].*$/, '')] ?? f} ${d}`);
      return { text: `${what}: ${listed.length ? listed.join('; ') : err.rawMessage}.`, fields };
    }
    case Code.FailedPrecondition:
      return { text: `${what}: ${sentence(err.rawMessage)}`, fields };
    case Code.PermissionDenied:
      return { text: `${what}: only an agency admin can do this.`, fields };
    case Code.Unauthenticated:
      return { text: 'Your session has expired: sign in again.', fields };
    case Code.NotFound:
      return { text: `${what}: it no longer exists (someone may have just deleted it). Reload to see the current state.`, fields };
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return { text: `${what}: the server could not be reached. Check the connection and try again.`, fields };
    default:
      return { text: `${what}: ${err.rawMessage}`, fields };
  }
}
