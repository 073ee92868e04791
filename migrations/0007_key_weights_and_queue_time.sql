ALTER TABLE `api_keys` ADD `weight` integer DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE `usage` ADD `queue_ms` integer;