// Short messages in a corner: toast.ok('Saved'), toast.error(text). Failures of user actions go
// through `actionFailed` (errors.svelte.ts), which applies the error policy first. The same
// error twice in a row is shown once (its timer restarts).
export interface Toast {
	id: number;
	kind: 'ok' | 'error';
	text: string;
}

let next = 1;

class Toaster {
	items = $state<Toast[]>([]);
	#timers = new Map<number, ReturnType<typeof setTimeout>>();

	push(kind: Toast['kind'], text: string): void {
		const same = this.items.find((t) => t.kind === kind && t.text === text);
		const id = same?.id ?? next++;
		if (!same) this.items.push({ id, kind, text });
		clearTimeout(this.#timers.get(id));
		this.#timers.set(
			id,
			setTimeout(() => this.dismiss(id), kind === 'error' ? 8000 : 4000)
		);
	}
	dismiss(id: number): void {
		clearTimeout(this.#timers.get(id));
		this.#timers.delete(id);
		this.items = this.items.filter((t) => t.id !== id);
	}
	ok(text: string): void {
		this.push('ok', text);
	}
	error(text: string): void {
		this.push('error', text);
	}
}

export const toast = new Toaster();
