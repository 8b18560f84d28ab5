// State of the capsule file tree: folder listings cached per path (loaded lazily on first
// expand), which folders are open, the current folder, the selected item and the previewed file.
// Two counters keep quick clicking consistent: one per folder (only its newest listing is kept)
// and one for the user's choices (a late answer cannot move the view after a newer choice).
import { SvelteMap, SvelteSet } from 'svelte/reactivity';
import * as filesApi from '$lib/api/files';
import type { FileEntry } from '$lib/api/types';
import { messageOf } from '$lib/errors.svelte';
import { crumbs, parentOf } from './files';

/** Children rendered per folder: more would freeze the page on folders like /usr/lib. */
export const MAX_CHILDREN = 500;

/** An entry of the tree: what a listing returns (the root has only the fields shown here). */
export type TreeEntry = Pick<FileEntry, 'name' | 'path' | 'type' | 'size'> & Partial<FileEntry>;

/** A folder's listing: cached entries (null until one succeeded), whether a request is under
 * way, and why the last one failed. */
export interface DirState {
	entries: TreeEntry[] | null;
	loading: boolean;
	error: string;
}

export interface VisibleItem {
	entry: TreeEntry;
	level: number;
	parent: string | null;
}

export const ROOT: TreeEntry = Object.freeze({ name: '/', path: '/', type: 'directory', size: 0 });

const collator = new Intl.Collator(undefined, { numeric: true });

function sorted(entries: TreeEntry[]): TreeEntry[] {
	return entries.toSorted(
		(a, b) => (a.type === 'directory' ? 0 : 1) - (b.type === 'directory' ? 0 : 1) || collator.compare(a.name, b.name)
	);
}

/** True if `path` is `dir` or lies below it. */
function within(path: string, dir: string): boolean {
	return path === dir || path.startsWith(dir === '/' ? '/' : `${dir}/`);
}

export class FileTreeState {
	/** path -> {entries: FileEntry[] | null, loading, error}; values are replaced, never mutated. */
	dirs = new SvelteMap<string, DirState>();
	expanded = new SvelteSet<string>();
	cwd = $state('/');
	entered = $state(0); // counts the times a folder was entered, even the current one again
	selected = $state('/'); // the treeitem marked aria-selected: the last one activated
	file = $state<TreeEntry | null>(null); // the previewed entry
	focus = $state('/'); // the treeitem in the tab order (roving tabindex)
	error = $state(''); // why the last "go to a path" failed
	reveals = $state(0); // asks the view to scroll the selected item into sight

	/** Visible items in display order, for the keyboard: [{entry, level, parent}]. */
	visible = $derived.by(() => {
		const out: VisibleItem[] = [];
		const walk = (entry: TreeEntry, level: number, parent: string | null) => {
			out.push({ entry, level, parent });
			if (!this.isOpen(entry)) return;
			for (const child of this.shown(entry.path)) walk(child, level + 1, entry.path);
		};
		walk(ROOT, 1, null);
		return out;
	});
	/** path -> index in `visible`. */
	// Rebuilt whole when `visible` changes, never mutated: a plain Map.
	// eslint-disable-next-line svelte/prefer-svelte-reactivity
	index = $derived(new Map(this.visible.map((item, i) => [item.entry.path, i])));
	/** The focus item, or the root when it is hidden (in a collapsed or refreshed folder). */
	tabStop = $derived(this.index.has(this.focus) ? this.focus : '/');

	#capsuleId: () => string;
	// Bookkeeping the view never reads: plain Maps, not reactive ones.
	// eslint-disable-next-line svelte/prefer-svelte-reactivity
	#gens = new Map<string, number>(); // path -> number of its newest listing request
	// eslint-disable-next-line svelte/prefer-svelte-reactivity
	#pending = new Map<string, Promise<boolean>>(); // path -> its newest listing (true if it listed)
	#choice = 0; // number of the user's newest choice

	constructor(capsuleId: () => string) {
		this.#capsuleId = capsuleId;
		this.expanded.add('/');
		this.load('/');
	}

	/** A folder, or a symlink that listed as one. */
	isDir(entry: TreeEntry): boolean {
		if (entry.type === 'symlink') return !!this.dirs.get(entry.path)?.entries;
		return entry.type === 'directory';
	}

	isOpen(entry: TreeEntry): boolean {
		return this.isDir(entry) && this.expanded.has(entry.path);
	}

	/** The children of a folder that are rendered (at most MAX_CHILDREN). */
	shown(path: string): TreeEntry[] {
		return this.dirs.get(path)?.entries?.slice(0, MAX_CHILDREN) ?? [];
	}

	/** Lists `path` afresh; resolves to whether it listed. A late answer to an older request
	 * for the same path is dropped (the newest request's result is returned instead). */
	load(path: string): Promise<boolean> {
		const mine = (this.#gens.get(path) ?? 0) + 1;
		this.#gens.set(path, mine);
		const before = this.dirs.get(path);
		// Old children stay on screen while a refresh is under way.
		this.dirs.set(path, { entries: before?.entries ?? null, loading: true, error: '' });
		const promise = (async () => {
			let next: DirState;
			try {
				const res = await filesApi.list(this.#capsuleId(), path);
				next = { entries: sorted(res.entries), loading: false, error: '' };
			} catch (e) {
				next = { entries: null, loading: false, error: messageOf(e) };
			}
			if (this.#gens.get(path) !== mine) {
				return this.#pending.get(path) ?? !this.dirs.get(path)?.error;
			}
			this.#pending.delete(path);
			this.dirs.set(path, next);
			return !next.error;
		})();
		this.#pending.set(path, promise);
		return promise;
	}

	/** Lists `path` unless its listing is cached or under way. */
	ensure(path: string): Promise<boolean> {
		const pending = this.#pending.get(path);
		if (pending) return pending;
		if (this.dirs.get(path)?.entries) return Promise.resolve(true);
		return this.load(path);
	}

	/** Re-lists the open folders; closed ones are forgotten and listed again when opened. */
	refresh(): void {
		for (const path of [...this.dirs.keys()]) {
			if (!this.expanded.has(path)) this.dirs.delete(path);
		}
		for (const path of this.expanded) this.load(path);
	}

	/** Opens a folder in place (the first time, its listing is loaded). */
	async expand(entry: TreeEntry): Promise<boolean> {
		if (entry.type === 'symlink' && !this.isDir(entry) && !(await this.ensure(entry.path))) {
			return false; // a link to a file, or a broken one
		}
		this.expanded.add(entry.path);
		return this.ensure(entry.path);
	}

	collapse(entry: TreeEntry): void {
		this.expanded.delete(entry.path);
		if (this.focus !== entry.path && within(this.focus, entry.path)) this.focus = entry.path;
	}

	toggle(entry: TreeEntry): void {
		this.focus = entry.path;
		if (this.isOpen(entry)) this.collapse(entry);
		else this.expand(entry);
	}

	/** Click or Enter: a folder opens and becomes the current one once it listed; a file is
	 * previewed. A symlink is tried as a folder first, quietly, and previewed as a file if it is
	 * none (a link to a file, or a broken one). */
	async activate(entry: TreeEntry): Promise<void> {
		const mine = ++this.#choice;
		this.error = '';
		this.focus = entry.path;
		this.selected = entry.path;
		if (entry.type === 'file') {
			this.file = entry;
			return;
		}
		const isDir = await this.expand(entry);
		if (mine !== this.#choice) return; // a newer choice was made meanwhile
		if (isDir) this.#enter(entry.path);
		else if (entry.type === 'symlink') this.file = entry;
	}

	/** The path input and the breadcrumbs: opens every folder from the root down to `path` and
	 * makes it the current one. A file at the end is previewed, in its folder. */
	async go(path: string): Promise<void> {
		const mine = ++this.#choice;
		this.error = '';
		for (const { path: step } of crumbs(path)) {
			const ok = await this.ensure(step);
			if (mine !== this.#choice) return;
			if (!ok) {
				const entry = this.#entryOf(step);
				if (step === path && entry && entry.type !== 'directory') {
					this.#enter(parentOf(path));
					this.selected = this.focus = path;
					this.file = entry;
					this.reveals++;
				} else {
					this.error = `Cannot open ${step}: ${this.dirs.get(step)?.error}`;
				}
				return;
			}
			this.expanded.add(step);
		}
		this.#enter(path);
		this.selected = this.focus = path;
		this.reveals++;
	}

	#enter(path: string): void {
		this.cwd = path;
		this.entered++;
	}

	/** The entry of `path` in its parent's cached listing. */
	#entryOf(path: string): TreeEntry | undefined {
		if (path === '/') return ROOT;
		return this.dirs.get(parentOf(path))?.entries?.find((e) => e.path === path);
	}
}
