CREATE TABLE `responses` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant` text NOT NULL,
	`model` text NOT NULL,
	`status` text NOT NULL,
	`response` text NOT NULL,
	`input_items` text NOT NULL,
	`history` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `responses_tenant` ON `responses` (`tenant`);--> statement-breakpoint
CREATE INDEX `responses_expires` ON `responses` (`expires_at`);