/**
 * Every module exposes start()/stop(); constructors only assign.
 * buildApp starts components in order and stops them in reverse order.
 */
export interface Component {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}
