ALTER TABLE `api_keys` ADD `semantic_cache` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `semantic_threshold` real;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `semantic_model` text;