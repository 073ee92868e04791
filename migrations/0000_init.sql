CREATE TABLE `api_keys` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`tenant` text NOT NULL,
	`prefix` text NOT NULL,
	`hash` text NOT NULL,
	`models` text,
	`rpm` integer,
	`tpm` integer,
	`monthly_token_budget` integer,
	`created_at` integer NOT NULL,
	`revoked_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_keys_hash_unique` ON `api_keys` (`hash`);--> statement-breakpoint
CREATE INDEX `api_keys_tenant` ON `api_keys` (`tenant`);--> statement-breakpoint
CREATE TABLE `cache_entries` (
	`key` text PRIMARY KEY NOT NULL,
	`tenant` text NOT NULL,
	`endpoint` text NOT NULL,
	`model` text NOT NULL,
	`chunks` text NOT NULL,
	`finish_reason` text NOT NULL,
	`prompt_tokens` integer NOT NULL,
	`completion_tokens` integer NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `cache_expires` ON `cache_entries` (`expires_at`);--> statement-breakpoint
CREATE TABLE `usage` (
	`id` text PRIMARY KEY NOT NULL,
	`at` integer NOT NULL,
	`key_id` text,
	`model` text,
	`endpoint` text NOT NULL,
	`agent_id` text,
	`device` text,
	`prompt_tokens` integer DEFAULT 0 NOT NULL,
	`completion_tokens` integer DEFAULT 0 NOT NULL,
	`ttft_ms` integer,
	`duration_ms` integer NOT NULL,
	`tokens_per_second` integer,
	`cache` text,
	`status` integer NOT NULL,
	`error_code` text,
	`outcome` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `usage_at` ON `usage` (`at`);--> statement-breakpoint
CREATE INDEX `usage_key_at` ON `usage` (`key_id`,`at`);--> statement-breakpoint
CREATE INDEX `usage_model_at` ON `usage` (`model`,`at`);