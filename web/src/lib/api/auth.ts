// Signing in and out of teams: login, signup, switching team, what the signed-out pages may
// offer, password reset by mail, OAuth providers.
import { request, seg, type RequestOptions } from './client';
import type { Input, Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

export const login = (body: Input<'login'>, o: Opts = {}) =>
	request<Reply<'login'>>('POST', '/v1/auth/login', { ...o, body });

export const signup = (body: Input<'signup'>, o: Opts = {}) =>
	request<Reply<'signup'>>('POST', '/v1/auth/signup', { ...o, body });

/** A signup's mailed link (`#token=...`): confirms the email and answers a session. */
export const activate = (token: string, o: Opts = {}) =>
	request<Reply<'activate'>>('POST', '/v1/auth/activate', { ...o, body: { token } });

/** Mails a new activation link; the same answer whether or not the email awaits one. */
export const resendActivation = (email: string, o: Opts = {}) =>
	request<null>('POST', '/v1/auth/activate/resend', { ...o, body: { email } });

export const switchTeam = (teamId: string, o: Opts = {}) =>
	request<Reply<'switchTeam'>>('POST', '/v1/auth/switch-team', { ...o, body: { team_id: teamId } });

export const options = (o: Opts = {}) => request<Reply<'authOptions'>>('GET', '/v1/auth/options', o);

export const oauthProviders = (o: Opts = {}) => request<Reply<'listOAuthProviders'>>('GET', '/v1/auth/oauth', o);

/** The page that starts an OAuth login: a whole-page navigation, not a fetch. */
export const oauthLoginUrl = (provider: string) => `/v1/auth/oauth/${seg(provider)}`;

export const requestPasswordReset = (email: string, o: Opts = {}) =>
	request<null>('POST', '/v1/me/password/reset', { ...o, body: { email } });

export const confirmPasswordReset = (token: string, newPassword: string, o: Opts = {}) =>
	request<null>('POST', '/v1/me/password/reset/confirm', { ...o, body: { token, new_password: newPassword } });
