// Client-only app: nothing renders on a server, nothing is prerendered; adapter-static's
// fallback page (index.html) boots the router in the browser for every path.
export const ssr = false;
export const prerender = false;
