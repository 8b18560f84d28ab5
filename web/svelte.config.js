import adapter from '@sveltejs/adapter-static';

/** A single-page app: the control plane serves 200.html for every page path. */
export default {
	kit: {
		adapter: adapter({ fallback: '200.html' }),
		// No inline script runs unless the build vouches for it: SvelteKit's bootstrap script is
		// inline, so the build puts its hash in the page's CSP <meta>; the control plane reads the
		// built page and sends the same hashes in its header (controlplane/api/dashboard.py).
		// Styles stay 'unsafe-inline': Svelte sets style attributes and transitions at run time.
		csp: {
			mode: 'hash',
			directives: {
				'default-src': ['self'],
				'script-src': ['self'],
				'style-src': ['self', 'unsafe-inline'],
				'img-src': ['self', 'data:', 'blob:'],
				'connect-src': ['self'],
				'base-uri': ['self'],
				'form-action': ['self']
			}
		}
	}
};
