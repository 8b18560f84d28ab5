// The platform admin area: users and invitations, teams (BYOC, quotas), templates and builds.
import { request, seg, type RequestOptions } from './client';
import type { Input, Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

/** One page (1-based, 100 a page) of the accounts, newest first, with the totals. */
export const usersPage = (page = 1, o: Opts = {}) =>
	request<Reply<'adminListUsers'>>('GET', '/v1/admin/users', { ...o, query: { page } });

/** Every page after `first` (the lists are 100 a page). */
async function rest<P extends { total_pages: number }>(first: P, get: (page: number) => Promise<P>): Promise<P[]> {
	const pages = [first];
	for (let n = 2; n <= first.total_pages; n++) pages.push(await get(n));
	return pages;
}

export const createUser = (body: Input<'adminCreateUser'>, o: Opts = {}) =>
	request<Reply<'adminCreateUser'>>('POST', '/v1/admin/users', { ...o, body });

export const setUserActive = (id: string, active: boolean, o: Opts = {}) =>
	request<Reply<'adminSetUserActive'>>('PUT', `/v1/admin/users/${seg(id)}/active`, { ...o, body: { active } });

export const invitations = (o: Opts = {}) => request<Reply<'adminListInvitations'>>('GET', '/v1/admin/invitations', o);

export const invite = (email: string, o: Opts = {}) =>
	request<Reply<'adminCreateInvitation'>>('POST', '/v1/admin/invitations', { ...o, body: { email } });

export const revokeInvitation = (id: string, o: Opts = {}) =>
	request<null>('DELETE', `/v1/admin/invitations/${seg(id)}`, o);

/** One page (1-based, 100 a page) of the teams, deleted ones last, with the totals. */
export const teamsPage = (page = 1, o: Opts = {}) =>
	request<Reply<'adminListTeams'>>('GET', '/v1/admin/teams', { ...o, query: { page } });

/** Every team, deleted ones included (`deleted_at`), each page in turn. */
export const teams = async (o: Opts = {}) =>
	(await rest(await teamsPage(1, o), (n) => teamsPage(n, o))).flatMap((p) => p.teams);

/** Delete a team: its capsules are destroyed, its templates deleted, its keys revoked. */
export const deleteTeam = (id: string, o: Opts = {}) => request<null>('DELETE', `/v1/admin/teams/${seg(id)}`, o);

export const setByoc = (id: string, enabled: boolean, o: Opts = {}) =>
	request<Reply<'adminSetTeamBYOC'>>('PUT', `/v1/admin/teams/${seg(id)}/byoc`, { ...o, body: { enabled } });

export const setQuotas = (id: string, body: Input<'adminSetTeamQuotas'>, o: Opts = {}) =>
	request<Reply<'adminSetTeamQuotas'>>('PUT', `/v1/admin/teams/${seg(id)}/quotas`, { ...o, body });

export const templates = (o: Opts = {}) => request<Reply<'adminListTemplates'>>('GET', '/v1/admin/templates', o);

/** Names are per team: `teamId` (the listing's `team_id`) says whose template of that name. */
export const deleteTemplate = (name: string, teamId: string, o: Opts = {}) =>
	request<null>('DELETE', `/v1/admin/templates/${seg(name)}`, { ...o, query: { team_id: teamId } });

export const builds = (o: Opts = {}) => request<Reply<'adminListBuilds'>>('GET', '/v1/admin/builds', o);

export const build = (id: string, o: Opts = {}) =>
	request<Reply<'adminGetBuild'>>('GET', `/v1/admin/builds/${seg(id)}`, o);

/** A build from a JSON recipe, or (`form`) from an uploaded archive with its fields. */
export const createBuild = (recipe: Input<'adminCreateBuild'> | FormData, o: Opts = {}) =>
	request<Reply<'adminCreateBuild'>>(
		'POST',
		'/v1/admin/builds',
		recipe instanceof FormData ? { ...o, form: recipe } : { ...o, body: recipe }
	);

export const cancelBuild = (id: string, o: Opts = {}) =>
	request<Reply<'adminCancelBuild'>>('POST', `/v1/admin/builds/${seg(id)}/cancel`, o);
