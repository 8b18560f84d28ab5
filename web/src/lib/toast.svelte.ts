// Short messages in a corner: toast.error(e) for a failed call, toast.ok('Saved').
let next = 1;

class Toaster {
	items = $state([]);

	push(kind, text) {
		const id = next++;
		this.items.push({ id, kind, text });
		setTimeout(() => this.dismiss(id), kind === 'error' ? 8000 : 4000);
	}
	dismiss(id) {
		this.items = this.items.filter((t) => t.id !== id);
	}
	ok(text) {
		this.push('ok', text);
	}
	error(e) {
		this.push('error', e?.message ?? String(e));
	}
}

export const toast = new Toaster();
