// Run `fn` now and every `intervalMs`, pausing while the tab is hidden (and catching up when it
// is shown again). Returns a stop function; use it as an $effect's cleanup.
export function poll(fn, intervalMs) {
	let timer = null;
	let stopped = false;
	const tick = async () => {
		timer = null;
		if (stopped || document.hidden) return;
		try {
			await fn();
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
		if (timer) clearTimeout(timer);
		document.removeEventListener('visibilitychange', onVisibility);
	};
}
