// Run `fn` now and every `intervalMs`, pausing while the tab is hidden (and catching up when it
// is shown again). Returns a stop function; use it as an $effect's cleanup. A failing (or timed
// out) run does not stop the polling: its error goes to `refreshes`, which shows one notice for
// all failing refreshes until one succeeds (see errors.svelte.ts). `fn` gets a signal that is
// aborted when the poll stops, so a request still under way is cancelled with its page.
import { refreshes } from './errors.svelte';

export function poll(fn: (signal: AbortSignal) => unknown, intervalMs: number): () => void {
	let timer: ReturnType<typeof setTimeout> | null = null;
	let stopped = false;
	const source = Symbol('poll');
	const controller = new AbortController();
	const tick = async () => {
		timer = null;
		if (stopped || document.hidden) return;
		try {
			await fn(controller.signal);
			if (!stopped) refreshes.succeeded(source);
		} catch (e) {
			if (!stopped) refreshes.failed(source, e);
		} finally {
			if (!stopped && !document.hidden) timer = setTimeout(tick, intervalMs);
		}
	};
	const onVisibility = () => {
		if (!document.hidden && timer === null) tick();
	};
	document.addEventListener('visibilitychange', onVisibility);
	tick();
	return () => {
		stopped = true;
		controller.abort();
		if (timer) clearTimeout(timer);
		document.removeEventListener('visibilitychange', onVisibility);
		refreshes.forget(source);
	};
}
