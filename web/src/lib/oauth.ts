// Signing in with an OAuth provider (GitHub). The API runs the flow: the browser navigates to
// /v1/auth/oauth/<provider> and comes back to /auth/<provider>/callback, either signed in (the
// session waits in an HttpOnly cookie that `takeSession` trades for it, once) or with an error.
import * as auth from './api/auth';
import * as me from './api/me';
import type { Reply } from './api/types';

export const NAMES: Record<string, string> = { github: 'GitHub' };
export const providerName = (provider: string): string => NAMES[provider] ?? provider;

/** The page that starts a login: a whole-page navigation, not a fetch (the provider's pages). */
export const loginUrl = auth.oauthLoginUrl;

let configured: Promise<string[]> | undefined;

/** The providers this installation is configured for; asked once per page load. */
export function configuredProviders(): Promise<string[]> {
	// A failure hides the buttons rather than offering ones that would not work.
	configured ??= auth.oauthProviders().then(
		(resp) => resp.providers.filter((p) => p in NAMES),
		() => []
	);
	return configured;
}

// Where a connect flow started, so the callback page can return there (sessionStorage: it
// survives the round trip through the provider, in this tab only).
const RETURN_KEY = 'wrenn.oauth.return';

/** Link `provider` to the signed-in account: the API sets the flow's cookies, then we leave. */
export async function connect(provider: string): Promise<void> {
	const { auth_url } = await me.connectProvider(provider);
	sessionStorage.setItem(RETURN_KEY, location.pathname);
	location.assign(auth_url);
}

/** A login starts: a connect abandoned earlier in this tab must not claim its callback. */
export function forgetReturnPath(): void {
	sessionStorage.removeItem(RETURN_KEY);
}

/** The page a connect flow started from (read once), or null after a plain login. */
export function takeReturnPath(): string | null {
	const path = sessionStorage.getItem(RETURN_KEY);
	sessionStorage.removeItem(RETURN_KEY);
	// Only a path of this site: never an open redirect.
	return path?.startsWith('/') && !path.startsWith('//') ? path : null;
}

/** The session an OAuth flow left for this browser (read once); throws when there is none.
 * A plain fetch, not `api`: with no sign-in to complete, a current session must stay. */
export async function takeSession(provider: string): Promise<Reply<'oauthSession'>> {
	let resp: Response;
	try {
		resp = await fetch(`${auth.oauthLoginUrl(provider)}/session`, {
			method: 'POST',
			credentials: 'same-origin'
		});
	} catch {
		throw new Error('The control plane cannot be reached.');
	}
	if (!resp.ok) {
		throw new Error(
			'There is no sign-in to complete in this browser: it expired, or it was started elsewhere. Please sign in again.'
		);
	}
	return resp.json();
}

/** What went wrong, for a person, from the callback's `error` code. */
export function errorMessage(code: string | null, provider: string, { connecting = false } = {}): string {
	const name = providerName(provider);
	switch (code) {
		case 'access_denied':
			return connecting
				? `${name} was not connected: the authorization was declined, or this ${name} account is already connected to another Wrenn account.`
				: `Sign-in with ${name} was cancelled or refused, or this account is disabled.`;
		case 'email_taken':
			return `An account with this email already exists, and it has not confirmed the address yet: sign in with its password (or reset the password by mail), then connect ${name} from your account.`;
		case 'signup_disabled':
			return `There is no Wrenn account for this ${name} account, and new accounts are by invitation or added by an administrator. Ask an administrator.`;
		case 'invalid_state':
			return `This sign-in link has expired or was started in another browser. Please try again.`;
		case 'missing_code':
			return `${name} did not complete the sign-in. Please try again.`;
		case 'exchange_failed':
			return `${name} could not confirm your identity (a verified primary email is required). Please try again.`;
		default:
			return `Something went wrong while signing in with ${name}. Please try again later.`;
	}
}
