// Teams of the signed-in user: list, create, rename, members and roles, leave, delete, quotas, parking.
import { request, seg, type RequestOptions } from './client';
import type { Input, Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

export const list = (o: Opts = {}) => request<Reply<'listTeams'>>('GET', '/v1/teams', o);

export const get = (id: string, o: Opts = {}) => request<Reply<'getTeam'>>('GET', `/v1/teams/${seg(id)}`, o);

export const create = (name: string, o: Opts = {}) =>
	request<Reply<'createTeam'>>('POST', '/v1/teams', { ...o, body: { name } });

export const rename = (id: string, name: string, o: Opts = {}) =>
	request<Reply<'renameTeam'>>('PATCH', `/v1/teams/${seg(id)}`, { ...o, body: { name } });

export const remove = (id: string, o: Opts = {}) => request<null>('DELETE', `/v1/teams/${seg(id)}`, o);

export const leave = (id: string, o: Opts = {}) => request<null>('POST', `/v1/teams/${seg(id)}/leave`, o);

export const addMember = (id: string, email: string, o: Opts = {}) =>
	request<Reply<'addTeamMember'>>('POST', `/v1/teams/${seg(id)}/members`, { ...o, body: { email } });

export const setRole = (id: string, userId: string, role: 'admin' | 'member', o: Opts = {}) =>
	request<Reply<'updateMemberRole'>>('PATCH', `/v1/teams/${seg(id)}/members/${seg(userId)}`, { ...o, body: { role } });

export const removeMember = (id: string, userId: string, o: Opts = {}) =>
	request<null>('DELETE', `/v1/teams/${seg(id)}/members/${seg(userId)}`, o);

export const quotas = (id: string, o: Opts = {}) =>
	request<Reply<'getTeamQuotas'>>('GET', `/v1/teams/${seg(id)}/quotas`, o);

export const parking = (id: string, o: Opts = {}) =>
	request<Reply<'getTeamParking'>>('GET', `/v1/teams/${seg(id)}/parking`, o);

export const setParking = (id: string, body: Input<'setTeamParking'>, o: Opts = {}) =>
	request<Reply<'setTeamParking'>>('PUT', `/v1/teams/${seg(id)}/parking`, { ...o, body });
