// Connection state as the user should see it: offline (the browser says so), reconnecting
// (a shape or stream request failed and is being retried), or online.
export const net = $state({ online: typeof navigator === 'undefined' ? true : navigator.onLine, failing: 0 });

if (typeof window !== 'undefined') {
  window.addEventListener('online', () => {
    net.online = true;
    // Requests that failed while offline say nothing about now, and the next success may be a
    // long-poll that answers only when data changes (up to ~20 s): start from a clean slate;
    // a request that fails from here on counts again.
    net.failing = 0;
  });
  window.addEventListener('offline', () => {
    net.online = false;
  });
}

let healTimer: ReturnType<typeof setTimeout> | undefined;
/** A sync request failed (the client retries it by itself). */
export function syncFailed() {
  net.failing += 1;
}
/** A sync request succeeded: the failure count drops back (debounced, so it does not flicker). */
export function syncOk() {
  if (net.failing === 0) return;
  clearTimeout(healTimer);
  healTimer = setTimeout(() => (net.failing = 0), 50);
}

export class OfflineError extends Error {
  constructor() {
    super('You are offline: changes cannot be saved until the connection is back. Nothing was changed.');
  }
}

export function assertOnline() {
  if (!net.online) throw new OfflineError();
}
