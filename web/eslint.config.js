// ESLint (flat config): JavaScript, TypeScript and Svelte, with Prettier owning the formatting.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import svelte from 'eslint-plugin-svelte';
import globals from 'globals';
import ts from 'typescript-eslint';
import svelteConfig from './svelte.config.js';

export default ts.config(
	{ ignores: ['build/', '.svelte-kit/', 'node_modules/', 'src/lib/api/schema.d.ts'] },
	js.configs.recommended,
	...ts.configs.recommended,
	...svelte.configs.recommended,
	prettier,
	...svelte.configs.prettier,
	{
		languageOptions: { globals: { ...globals.browser, ...globals.node } }
	},
	{
		files: ['**/*.svelte', '**/*.svelte.ts', '**/*.svelte.js'],
		languageOptions: {
			parserOptions: {
				projectService: true,
				extraFileExtensions: ['.svelte'],
				parser: ts.parser,
				svelteConfig
			}
		}
	},
	{
		// API paths are written once, in the module of their area (src/lib/api/*.ts).
		files: ['src/**/*.ts', 'src/**/*.js', 'src/**/*.svelte'],
		ignores: ['src/lib/api/**', 'src/**/*.test.ts'],
		rules: {
			'no-restricted-syntax': [
				'error',
				{ selector: 'Literal[value=/^\\/v1/]', message: 'Call the API through $lib/api/<area>.' },
				{ selector: 'TemplateElement[value.raw=/^\\/v1/]', message: 'Call the API through $lib/api/<area>.' }
			]
		}
	},
	{
		rules: {
			// A caught error is often deliberately ignored: `catch { ... }` says so.
			'@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none' }],
			// The dashboard is served at the root, without a base path: links need no resolve().
			'svelte/no-navigation-without-resolve': 'off'
		}
	}
);
