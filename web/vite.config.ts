import adapter from '@sveltejs/adapter-static';
import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

// Kit 2.70 reads its config here (no svelte.config.js). A client-only SPA: nothing is
// prerendered (ssr = false in +layout.ts); the gateway serves build/index.html for any path
// that is not a file. precompress writes .gz/.br next to every file (nginx gzip_static).
declare const process: { env: Record<string, string | undefined> };
const gateway = process.env.FOLIO_GATEWAY ?? 'http://127.0.0.1:8080';
export default defineConfig({
  plugins: [
    sveltekit({
      adapter: adapter({ pages: 'build', assets: 'build', fallback: 'index.html', precompress: true }),
    }),
  ],
  // `npm run dev` talks to the gateway of dev-up.sh, so the page stays same-origin.
  server: {
    proxy: {
      '/v1/': { target: gateway, changeOrigin: false },
      '/folio.api.v1.': { target: gateway, changeOrigin: false },
      '/dev-users.json': { target: gateway, changeOrigin: false },
    },
  },
});
