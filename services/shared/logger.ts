import { pino, type Logger } from "pino";

export type { Logger } from "pino";

/**
 * The process logger: JSON lines by default (what log collectors want), readable
 * lines when a person watches a terminal. LOG_FORMAT=json|pretty forces either;
 * LOG_LEVEL sets the level (default info).
 */
export function createLogger(service: string, options: { level?: string } = {}): Logger {
  const level = options.level ?? process.env.LOG_LEVEL ?? "info";
  const format = process.env.LOG_FORMAT ?? (process.stdout.isTTY ? "pretty" : "json");
  if (format === "pretty") {
    return pino({
      level,
      base: { service },
      transport: { target: "pino-pretty", options: { colorize: true, ignore: "pid,hostname", translateTime: "HH:MM:ss.l" } },
    });
  }
  return pino({ level, base: { service } });
}

/** A logger that drops everything: the default for library users who pass none. */
export const silentLogger: Logger = pino({ level: "silent" });
