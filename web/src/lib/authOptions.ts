// What the signed-out pages may offer: who may sign up ('open', 'invite' or 'closed') and
// whether a forgotten password can be reset by mail. Asked once per page load.
import { replaceState } from '$app/navigation';
import * as auth from './api/auth';
import type { Reply } from './api/types';

type Options = Reply<'authOptions'>;
let options: Promise<Options> | undefined;

export function authOptions(): Promise<Options> {
	// Unknown (the API unreachable): offer the least, so no link leads to a refusal.
	options ??= auth.options().catch((): Options => ({ signup: 'closed', password_reset: false }));
	return options;
}

/** The `#key=value&...` of the address, read once and then dropped from it and from the
 * history: mailed links carry their token there, where no server log or Referer sees it.
 * Call it from afterNavigate (the router must be started). */
export function takeFragment(): URLSearchParams {
	const params = new URLSearchParams(location.hash.slice(1));
	if (location.hash) replaceState(location.pathname + location.search, {});
	return params;
}
