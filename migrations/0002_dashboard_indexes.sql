DROP INDEX `usage_at`;--> statement-breakpoint
CREATE INDEX `usage_at_id` ON `usage` (`at`,`id`);