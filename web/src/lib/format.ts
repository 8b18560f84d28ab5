export function bytes(n) {
	if (n === null || n === undefined) return '—';
	const units = ['B', 'KB', 'MB', 'GB', 'TB'];
	let i = 0;
	let v = Number(n);
	while (v >= 1024 && i < units.length - 1) {
		v /= 1024;
		i++;
	}
	return `${v < 10 && i ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function when(iso) {
	if (!iso) return '—';
	return new Date(iso).toLocaleString();
}

export function ago(iso) {
	if (!iso) return '—';
	const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
	if (s < 60) return `${Math.max(s, 0)}s ago`;
	if (s < 3600) return `${Math.round(s / 60)}m ago`;
	if (s < 86400) return `${Math.round(s / 3600)}h ago`;
	return `${Math.round(s / 86400)}d ago`;
}
