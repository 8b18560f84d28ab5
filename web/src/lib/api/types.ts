// Types of the API, read from the generated OpenAPI schema (schema.d.ts, `npm run gen:api`): each
// call's reply, body and query are named by its operationId, so a changed route breaks the build.
import type { components, operations } from './schema';

export type Schemas = components['schemas'];
type Op = keyof operations;
type JsonOf<R> = R extends { content: { 'application/json': infer T } } ? T : never;

/** The body of an operation's success reply (null for 204). */
export type Reply<K extends Op> = operations[K]['responses'] extends infer R
	? R extends { 200: infer A }
		? JsonOf<A>
		: R extends { 201: infer A }
			? JsonOf<A>
			: R extends { 202: infer A }
				? JsonOf<A>
				: null
	: never;

/** The JSON body an operation takes. */
export type Input<K extends Op> = operations[K] extends { requestBody?: { content: { 'application/json': infer T } } }
	? T
	: never;

/** The query parameters an operation takes. */
export type QueryOf<K extends Op> = NonNullable<operations[K]['parameters']['query']>;

export type Capsule = Schemas['Capsule'];
export type FileEntry = Schemas['FileEntry'];
export type Team = Schemas['TeamWithRoleResponse'];
export type Host = Schemas['HostResponse'];
export type Me = Schemas['MeResponse'];
