import { build, ensureInstalled } from './lib/bootstrap.mjs';
ensureInstalled();
build();
