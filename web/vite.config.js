import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

// `npm run dev` proxies the API to a control plane on :8080 (`wrenn up`).
export default defineConfig({
	plugins: [sveltekit()],
	server: { proxy: { '/v1': 'http://127.0.0.1:8080' } }
});
