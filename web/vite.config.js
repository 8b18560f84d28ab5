import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vitest/config';

// `npm run dev` proxies the API to a control plane on :8080 (`wrenn up`).
export default defineConfig(({ mode }) => ({
	plugins: [sveltekit()],
	server: { proxy: { '/v1': 'http://127.0.0.1:8080' } },
	// `npm test` (mode "test"): unit tests of src/lib in a simulated browser (jsdom), with
	// Svelte's browser build.
	resolve: mode === 'test' ? { conditions: ['browser'] } : undefined,
	test: {
		include: ['src/**/*.test.ts'],
		environment: 'jsdom'
	}
}));
