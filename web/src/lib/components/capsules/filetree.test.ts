import { afterEach, describe, expect, it, vi } from 'vitest';
import { apiError, fakeFetch, json, type Call } from '$lib/testing/fetch';
import { FileTreeState, MAX_CHILDREN, type TreeEntry } from './filetree.svelte';
import { crumbs, normalize, parentOf } from './files';

const dir = (path: string): TreeEntry => ({ name: path.split('/').pop()!, path, type: 'directory', size: 0 });
const file = (path: string, size = 10): TreeEntry => ({ name: path.split('/').pop()!, path, type: 'file', size });
const link = (path: string): TreeEntry => ({ name: path.split('/').pop()!, path, type: 'symlink', size: 0 });

/** A capsule file system: folder path -> its entries; anything else is "no such file". */
type Fs = Record<string, TreeEntry[]>;

/** Answers listings from `fs`; a path in `held` waits until the test releases it. */
function serve(fs: Fs) {
	const held = new Map<string, () => void>();
	const hold = new Set<string>();
	const calls = fakeFetch(async (call: Call) => {
		const path = (call.body as { path: string }).path;
		// The answer is what the folder holds when asked, even if it is delivered late.
		const answer = fs[path] ? json({ entries: fs[path] }) : apiError(404, 'not_found', `no such file: ${path}`);
		if (hold.has(path)) {
			hold.delete(path);
			await new Promise<void>((release) => held.set(path, release));
		}
		return answer;
	});
	return {
		calls,
		hold: (path: string) => hold.add(path),
		release: (path: string) => held.get(path)?.(),
		listed: () => calls.map((c) => (c.body as { path: string }).path)
	};
}

const settle = () => new Promise((r) => setTimeout(r, 0));
async function until(check: () => boolean) {
	for (let i = 0; i < 100 && !check(); i++) await settle();
	expect(check()).toBe(true);
}

afterEach(() => vi.unstubAllGlobals());

const FS: Fs = {
	'/': [file('/b.txt'), dir('/usr'), file('/a10'), file('/a9'), dir('/etc'), link('/lib'), link('/hosts')],
	'/etc': [file('/etc/hosts'), dir('/etc/ssl')],
	'/etc/ssl': [file('/etc/ssl/cert.pem')],
	'/usr': [dir('/usr/lib')],
	'/lib': [file('/lib/libc.so')]
};

describe('FileTreeState', () => {
	it('lists the root first: folders first, names in natural order', async () => {
		const fs = serve(FS);
		const tree = new FileTreeState(() => 'cap1');
		await until(() => !!tree.dirs.get('/')?.entries);
		expect(tree.shown('/').map((e) => e.name)).toEqual(['etc', 'usr', 'a9', 'a10', 'b.txt', 'hosts', 'lib']);
		expect(fs.calls[0].url).toBe('/v1/capsules/cap1/files/list');
		expect(tree.visible.map((v) => v.entry.path)).toEqual(['/', ...tree.shown('/').map((e) => e.path)]);
	});

	it('opens a folder in place and makes it current once listed; a file is previewed', async () => {
		serve(FS);
		const tree = new FileTreeState(() => 'cap1');
		await tree.activate(dir('/etc'));
		expect(tree.cwd).toBe('/etc');
		expect(tree.visible.map((v) => [v.entry.path, v.level])).toContainEqual(['/etc/ssl', 3]);
		await tree.activate(file('/etc/hosts'));
		expect(tree.file?.path).toBe('/etc/hosts');
		expect(tree.cwd).toBe('/etc'); // a file does not change the current folder
	});

	it('tries a symlink as a folder, and previews it when it is none', async () => {
		serve(FS);
		const tree = new FileTreeState(() => 'cap1');
		await tree.activate(link('/lib'));
		expect(tree.cwd).toBe('/lib');
		expect(tree.isDir(link('/lib'))).toBe(true);
		await tree.activate(link('/hosts'));
		expect(tree.file?.path).toBe('/hosts');
		expect(tree.cwd).toBe('/lib');
	});

	it('goes to a typed path, opening every folder on the way', async () => {
		serve(FS);
		const tree = new FileTreeState(() => 'cap1');
		await tree.go('/etc/ssl');
		expect(tree.cwd).toBe('/etc/ssl');
		expect([...tree.expanded].sort()).toEqual(['/', '/etc', '/etc/ssl']);
		expect(tree.selected).toBe('/etc/ssl');
	});

	it('goes to a file by previewing it in its folder', async () => {
		serve(FS);
		const tree = new FileTreeState(() => 'cap1');
		await tree.go('/etc/ssl/cert.pem');
		expect(tree.cwd).toBe('/etc/ssl');
		expect(tree.file?.path).toBe('/etc/ssl/cert.pem');
		expect(tree.error).toBe('');
	});

	it('says which step of a path cannot be opened', async () => {
		serve(FS);
		const tree = new FileTreeState(() => 'cap1');
		await tree.go('/nope/deeper');
		expect(tree.error).toContain('Cannot open /nope');
		expect(tree.cwd).toBe('/');
	});

	it('drops a late answer to an older choice: the newest choice wins', async () => {
		const fs = serve(FS);
		const tree = new FileTreeState(() => 'cap1');
		await until(() => !!tree.dirs.get('/')?.entries);
		fs.hold('/usr');
		const slow = tree.activate(dir('/usr'));
		await tree.activate(dir('/etc'));
		expect(tree.cwd).toBe('/etc');
		fs.release('/usr');
		await slow;
		expect(tree.cwd).toBe('/etc'); // the late /usr listing did not move the view
		expect(tree.dirs.get('/usr')?.entries).not.toBeNull(); // but it is cached
	});

	it('keeps only the newest listing of a folder', async () => {
		const files: Fs = { '/': [file('/old')] };
		const fs = serve(files);
		const tree = new FileTreeState(() => 'cap1');
		await until(() => !!tree.dirs.get('/')?.entries);
		fs.hold('/');
		const old = tree.load('/');
		files['/'] = [file('/new')];
		expect(await tree.load('/')).toBe(true);
		fs.release('/');
		expect(await old).toBe(true);
		expect(tree.shown('/').map((e) => e.path)).toEqual(['/new']);
	});

	it('lists a folder once however often it is asked for, and refresh re-lists open ones only', async () => {
		const fs = serve(FS);
		const tree = new FileTreeState(() => 'cap1');
		await Promise.all([tree.ensure('/etc'), tree.ensure('/etc'), tree.ensure('/')]);
		expect(fs.listed().filter((p) => p === '/etc')).toHaveLength(1);
		expect(fs.listed().filter((p) => p === '/')).toHaveLength(1);
		tree.refresh(); // /etc is cached but closed: forgotten, not re-listed
		await settle();
		expect(fs.listed().filter((p) => p === '/')).toHaveLength(2);
		expect(fs.listed().filter((p) => p === '/etc')).toHaveLength(1);
		expect(tree.dirs.has('/etc')).toBe(false);
	});

	it('renders at most MAX_CHILDREN children of a folder', async () => {
		const many = Array.from({ length: MAX_CHILDREN + 5 }, (_, i) => file(`/big/f${i}`));
		serve({ '/': [dir('/big')], '/big': many });
		const tree = new FileTreeState(() => 'cap1');
		await tree.activate(dir('/big'));
		expect(tree.shown('/big')).toHaveLength(MAX_CHILDREN);
	});

	it('moves the focus up to a folder that is collapsed around it', async () => {
		serve(FS);
		const tree = new FileTreeState(() => 'cap1');
		await tree.go('/etc/ssl');
		tree.focus = '/etc/ssl';
		tree.collapse(dir('/etc'));
		expect(tree.focus).toBe('/etc');
		expect(tree.tabStop).toBe('/etc');
	});
});

describe('paths', () => {
	it('normalizes, splits and climbs paths', () => {
		expect(normalize('a/./b/../c//')).toBe('/a/c');
		expect(normalize('/../..')).toBe('/');
		expect(parentOf('/a/b')).toBe('/a');
		expect(parentOf('/a')).toBe('/');
		expect(crumbs('/a/b').map((c) => c.path)).toEqual(['/', '/a', '/a/b']);
	});
});
