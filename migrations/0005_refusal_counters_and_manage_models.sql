ALTER TABLE `api_keys` ADD `manage_models` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `usage` ADD `requests` integer DEFAULT 1 NOT NULL;