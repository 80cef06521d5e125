import { defineConfig } from 'vite';

// Served by the orchestrator under /console/ (through the control gateway).
export default defineConfig({
  base: '/console/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: true,
  },
});
