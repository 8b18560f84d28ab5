// File helpers of the capsule file browser.
import { api } from '$lib/api.js';

export const MAX_PREVIEW_BYTES = 10 * 1024 * 1024;
export const MAX_PREVIEW_LINES = 5000;

export function parentOf(path) {
	const parts = path.split('/').filter(Boolean);
	parts.pop();
	return '/' + parts.join('/');
}

export function joinPath(dir, name) {
	return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

/** An absolute path without empty, `.` or `..` parts (a relative one is taken from the root). */
export function normalize(path) {
	const parts = [];
	for (const part of path.split('/')) {
		if (part === '..') parts.pop();
		else if (part && part !== '.') parts.push(part);
	}
	return '/' + parts.join('/');
}

/** [{name, path}] from the root to `path`. */
export function crumbs(path) {
	const out = [{ name: '/', path: '/' }];
	let acc = '';
	for (const part of path.split('/').filter(Boolean)) {
		acc += `/${part}`;
		out.push({ name: part, path: acc });
	}
	return out;
}

export async function readBytes(capsuleId, path) {
	const resp = await api.raw('POST', `/v1/capsules/${capsuleId}/files/stream/read`, { path });
	return new Uint8Array(await resp.arrayBuffer());
}

/** Text if `data` looks like text (no NUL bytes, valid UTF-8), else null. */
export function asText(data) {
	if (data.subarray(0, 8192).includes(0)) return null;
	try {
		return new TextDecoder('utf-8', { fatal: true }).decode(data);
	} catch {
		return null;
	}
}

/** Save a capsule file through the browser. */
export async function download(capsuleId, path) {
	const resp = await api.raw('POST', `/v1/capsules/${capsuleId}/files/stream/read`, { path });
	const url = URL.createObjectURL(await resp.blob());
	const a = document.createElement('a');
	a.href = url;
	a.download = path.split('/').pop() || 'download';
	document.body.appendChild(a);
	a.click();
	a.remove();
	// Revoked later: the browser needs the URL while the download starts.
	setTimeout(() => URL.revokeObjectURL(url), 5000);
}
