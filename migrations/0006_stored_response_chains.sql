ALTER TABLE `responses` ADD `previous_response_id` text;--> statement-breakpoint
ALTER TABLE `responses` ADD `depth` integer DEFAULT 1 NOT NULL;