// Who is signed in. The app holds one bearer JWT (HS256, the claims folio-auth verifies: sub,
// agency_id, role, exp) in localStorage and sends it on every request: shapes, streams and
// gRPC-Web. In development the gateway serves /dev-users.json (written by dev-up.sh from
// seed-demo --json) and the sign-in page lists those users; see web/README.md for how a real
// identity provider's token is exchanged for one of these.
const KEY = 'folio.session';

export type SessionUser = {
  name: string;
  email: string;
  role: 'viewer' | 'editor' | 'admin';
  token: string;
  agency?: string;
  agency_id?: string;
};

export type Claims = { sub: string; agency_id: string; role: string; exp: number };

function load(): SessionUser | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const user = JSON.parse(raw) as SessionUser;
    const claims = decodeClaims(user.token);
    if (!claims || claims.exp * 1000 < Date.now()) return null;
    return user;
  } catch {
    return null;
  }
}

export const session = $state<{ user: SessionUser | null }>({ user: load() });

export function decodeClaims(token: string): Claims | null {
  try {
    const part = token.split('.')[1];
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(json) as Claims;
  } catch {
    return null;
  }
}

export function signIn(user: SessionUser) {
  localStorage.setItem(KEY, JSON.stringify(user));
  session.user = user;
}

/** Drops the token and every synced collection: a full reload starts clean. */
export function signOut() {
  localStorage.removeItem(KEY);
  location.assign('/');
}

export function token(): string {
  return session.user?.token ?? '';
}

export const bearer = () => `Bearer ${token()}`;

export function mayWrite(): boolean {
  return session.user?.role === 'editor' || session.user?.role === 'admin';
}

/** Development only: the gateway answers 404 unless dev-up.sh wrote the file. */
export async function demoUsers(): Promise<SessionUser[]> {
  const res = await fetch('/dev-users.json', { cache: 'no-store' });
  if (!res.ok) return [];
  const body = await res.json();
  return Array.isArray(body) ? (body as SessionUser[]) : [];
}
