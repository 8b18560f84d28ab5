// The dashboard's one error policy:
//
// - A page load (what a page shows when it opens) fails inline: the page renders
//   `messageOf(e)` in its own role="alert" element, where the missing content would be.
// - A user action (a button, a form) fails with a toast: `actionFailed(e)`. A dialog's form
//   shows its error inside the dialog instead (the dialog is what the user is looking at).
// - A background refresh (polling) never toasts: `poll` reports its failures here, and while
//   any refresh fails one notice is shown for all of them (`refreshes.notice`, rendered once by
//   the layout), not one per failure or per poller; it clears on the next success.
// - A cancelled request (the page was left, or a newer request replaced it) is nobody's news:
//   every helper here ignores it.
import { ApiError } from './api/client';
import { toast } from './toast.svelte';

/** What went wrong, for a person. */
export function messageOf(e: unknown): string {
	if (e instanceof Error) return e.message;
	return String(e);
}

/** True for a request cancelled on purpose, which must not be reported. */
export function isAborted(e: unknown): boolean {
	return e instanceof ApiError && e.aborted;
}

/** A user action failed: say so in a toast (unless it was cancelled). */
export function actionFailed(e: unknown): void {
	if (!isAborted(e)) toast.error(messageOf(e));
}

/** The failures of background refreshes, one notice for all of them. */
class Refreshes {
	#failing = new Map<symbol, string>();
	/** The notice to show, or '' while every refresh succeeds. */
	notice = $state('');

	failed(source: symbol, e: unknown): void {
		if (isAborted(e)) return;
		this.#failing.set(source, messageOf(e));
		this.#update();
	}

	succeeded(source: symbol): void {
		if (this.#failing.delete(source)) this.#update();
	}

	/** A poller stopped (its page was left): its failure no longer counts. */
	forget(source: symbol): void {
		this.succeeded(source);
	}

	#update(): void {
		const first = this.#failing.values().next();
		this.notice = first.done ? '' : `${first.value} Retrying…`;
	}
}

export const refreshes = new Refreshes();
