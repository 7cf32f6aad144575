export { AgentMetrics } from "./agent-metrics.js";
export { MetricsServer, type MetricsServerOptions } from "./server.js";
export { SiteMetrics } from "./site-metrics.js";
