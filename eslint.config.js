// ESLint (correctness) + typescript-eslint; formatting is prettier's job (`npm run lint` runs both).
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  { ignores: ["dist/**", "dist-*/**", "node_modules/**", ".stack/**"] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    rules: {
      // Errors here are one line naming the problem and the fix; a `cause` chain would carry
      // lower-level messages (tokens, secret values in request bodies) into logs.
      "preserve-caught-error": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    files: ["**/*.cjs"],
    languageOptions: {
      sourceType: "commonjs",
      globals: { require: "readonly", module: "writable", process: "readonly" },
    },
    rules: { "@typescript-eslint/no-require-imports": "off" },
  },
);
