import adapter from '@sveltejs/adapter-static';

/** A single-page app: the control plane serves 200.html for every page path. */
export default {
	kit: {
		adapter: adapter({ fallback: '200.html' })
	}
};
