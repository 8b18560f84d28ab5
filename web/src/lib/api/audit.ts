// Audit logs: the current team's, and the platform's (admins), a page at a time.
import { request, type RequestOptions } from './client';
import type { QueryOf, Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;
export type AuditQuery = QueryOf<'listAuditLogs'>;

export const team = (query: AuditQuery, o: Opts = {}) =>
	request<Reply<'listAuditLogs'>>('GET', '/v1/audit-logs', { ...o, query });

export const platform = (query: QueryOf<'adminListAuditLogs'>, o: Opts = {}) =>
	request<Reply<'adminListAuditLogs'>>('GET', '/v1/admin/audit-logs', { ...o, query });
