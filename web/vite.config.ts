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
  // fastq (the queue of @durable-streams/client's IdempotentProducer) defers with
  // process.nextTick, which a browser lacks: the ReferenceError rejected, silently, every batch
  // the producer put aside while its first (epoch-claiming) append was in flight, so the
  // collaborative editor lost the keystrokes typed during its first POST and the other
  // editors' Yjs documents kept every later update pending behind that gap. A microtask is
  // what nextTick means here (fastq only calls it with a function).
  define: { 'process.nextTick': 'queueMicrotask' },
  // `npm run dev` talks to the gateway of dev-up.sh, so the page stays same-origin.
  server: {
    proxy: {
      '/v1/': { target: gateway, changeOrigin: false },
      '/folio.api.v1.': { target: gateway, changeOrigin: false },
      '/dev-users.json': { target: gateway, changeOrigin: false },
    },
  },
});
