// hapa for VS Code: starts hapa-lsp, shows its status, streams generations, shows next edit suggestions, and
// offers the palette commands.
import { execFile } from 'child_process';
import * as vscode from 'vscode';
import {
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ResponseError,
  ServerOptions,
  State,
  TransportKind,
} from 'vscode-languageclient/node';

const SECTION = 'hapa';
// Settings that belong to this extension, not to the server: never sent in workspace/configuration.
const CLIENT_ONLY = ['hapa.client.', 'hapa.trace.'];
// Secrets kept in VS Code's secret storage, handed to the server through its environment.
const SECRETS: Record<string, string> = {
  'hapa.backend.apiKey': 'HAPA_BACKEND_API_KEY',
  'hapa.sidecar.apiKey': 'HAPA_SIDECAR_API_KEY',
};

interface Status {
  state: 'ok' | 'busy' | 'warning' | 'error';
  message: string;
  code?: string;
  incident_id?: string;
}

interface StreamChunk {
  request_id: string;
  text: string;
}

interface Generation {
  generated_code?: string;
  explanation?: string;
  status?: string;
  response_time_ms?: number;
  history_id?: number;
  request_id?: string;
  incident_id?: string;
}

let client: LanguageClient | undefined;
let statusItem: vscode.StatusBarItem;
let lastStatus: Status = { state: 'busy', message: 'hapa-lsp is starting' };
let lastGeneration: Generation | undefined;
let nextEdits: NextEdits | undefined;

/** Live, read-only documents showing a generation's text as it streams in (scheme hapa-generation). */
class GenerationDocuments implements vscode.TextDocumentContentProvider {
  static readonly scheme = 'hapa-generation';
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  private readonly texts = new Map<string, string>();
  private readonly byRequest = new Map<string, vscode.Uri>();
  private pending: vscode.Uri | undefined;
  private counter = 0;
  readonly onDidChange = this.changed.event;

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.texts.get(uri.toString()) ?? '';
  }

  /** A new view for a generation that is about to start; the first chunk without a known view lands here. */
  async open(question: string, language: string): Promise<vscode.Uri> {
    this.counter += 1;
    const ext = language === 'python' ? 'py' : 'txt';
    const uri = vscode.Uri.parse(`${GenerationDocuments.scheme}:generation-${this.counter}.${ext}`);
    this.texts.set(uri.toString(), `# generating: ${question}\n`);
    this.pending = uri;
    const doc = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true, preview: true });
    return uri;
  }

  /** hapa/streamChunk carries the text so far: replace the view's content with it. */
  chunk(params: StreamChunk): void {
    let uri = this.byRequest.get(params.request_id);
    if (!uri && this.pending) {
      uri = this.pending;
      this.pending = undefined;
      this.byRequest.set(params.request_id, uri);
    }
    if (uri) {
      this.set(uri, params.text);
    }
  }

  set(uri: vscode.Uri, text: string): void {
    this.texts.set(uri.toString(), text);
    this.changed.fire(uri);
  }

  done(uri: vscode.Uri): void {
    if (this.pending?.toString() === uri.toString()) {
      this.pending = undefined;
    }
  }
}

const generations = new GenerationDocuments();

function errorText(err: unknown): string {
  if (err instanceof ResponseError) {
    const data = err.data as { incident_id?: string } | undefined;
    return data?.incident_id ? `${err.message} (${data.incident_id})` : err.message;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Run a server command (workspace/executeCommand with one JSON object argument). */
async function execute<T>(command: string, arg: object = {}, token?: vscode.CancellationToken): Promise<T> {
  if (!client || client.state !== State.Running) {
    throw new Error('hapa-lsp is not running');
  }
  return (await client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [arg] }, token)) as T;
}

/** One next edit as hapa-lsp answers textDocument/copilotInlineEdit (GitHub Copilot language server's shapes). */
interface InlineEdit {
  text: string;
  textDocument: { uri: string; version: number };
  range: { start: { line: number; character: number }; end: { line: number; character: number } };
  command?: { title: string; command: string; arguments?: unknown[] };
}

const INLINE_EDIT = 'textDocument/copilotInlineEdit';
const INLINE_EDIT_SHOWN = 'textDocument/didShowInlineEdit';
const NEXT_EDIT_VISIBLE = 'hapa.nextEditVisible';
// Ask after this long without typing (the server waits hapa.nextEdit.debounceMs more before calling the model).
const NEXT_EDIT_DEBOUNCE_MS = 300;
// An edit more than this many lines away from the cursor, or off screen, is reached with Tab before Tab accepts it.
const NEAR_LINES = 2;
// The new text shown after the replaced range: one line, at most this many characters (the hover has all of it).
const SHOWN_CHARS = 80;

interface ShownEdit {
  editor: vscode.TextEditor;
  item: InlineEdit;  // as answered (didShowInlineEdit sends it back)
  range: vscode.Range;  // what is shown and applied: the item's edit, widened to whole words
  text: string;
  version: number;
}

/** Where the cursor ends after `text` is inserted at `start`. */
function endAfter(start: vscode.Position, text: string): vscode.Position {
  const lines = text.split(/\r\n|\r|\n/);
  const last = lines[lines.length - 1];
  return lines.length === 1 ? start.translate(0, last.length) : new vscode.Position(start.line + lines.length - 1, last.length);
}

/**
 * A replacement inside words widened to the whole words (the same change): the server answers the minimal edit
 * (`scale` -> `size` replaces `cal` with `iz`), which reads better struck through and retyped as words.
 */
function wholeWords(doc: vscode.TextDocument, range: vscode.Range, text: string): { range: vscode.Range; text: string } {
  if (range.isEmpty || text === '') {
    return { range, text };  // an insertion or a deletion shows as it is
  }
  const word = /[\p{L}\p{N}_]/u;
  const first = doc.lineAt(range.start.line).text;
  const last = doc.lineAt(range.end.line).text;
  let start = range.start.character;
  let end = range.end.character;
  while (start > 0 && word.test(first[start - 1])) {
    start -= 1;
  }
  while (end < last.length && word.test(last[end])) {
    end += 1;
  }
  return {
    range: new vscode.Range(range.start.line, start, range.end.line, end),
    text: first.slice(start, range.start.character) + text + last.slice(range.end.character, end),
  };
}

/**
 * Next edit suggestions: after a typing pause, ask hapa-lsp where the next edit is (textDocument/copilotInlineEdit)
 * and show it with decorations: the replaced text struck through, the new text after it, and at the cursor's line
 * "Tab: jump to next edit" when it is far away. Tab jumps there, then accepts; Escape dismisses; any change to the
 * document clears it. An insertion at the cursor is left to the inline completions (ghost text).
 */
class NextEdits implements vscode.Disposable {
  private readonly deleted = vscode.window.createTextEditorDecorationType({
    backgroundColor: new vscode.ThemeColor('hapa.nextEdit.deletedBackground'),
    textDecoration: 'line-through',
  });
  private readonly inserted = vscode.window.createTextEditorDecorationType({
    after: {
      color: new vscode.ThemeColor('hapa.nextEdit.insertedForeground'),
      backgroundColor: new vscode.ThemeColor('hapa.nextEdit.insertedBackground'),
    },
  });
  private readonly jump = vscode.window.createTextEditorDecorationType({
    after: { color: new vscode.ThemeColor('hapa.nextEdit.jumpForeground'), fontStyle: 'italic', margin: '0 0 0 3ch' },
  });
  private shown: ShownEdit | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pending: vscode.CancellationTokenSource | undefined;

  /** The running server answers textDocument/copilotInlineEdit and the user has not turned it off. */
  private available(c: LanguageClient | undefined): c is LanguageClient {
    return !!c && c.state === State.Running && !!c.initializeResult?.capabilities?.experimental?.copilotInlineEdit
      && vscode.workspace.getConfiguration(SECTION).get<boolean>('nextEdit.enabled') !== false;
  }

  /** A change to a document: clears what is shown on it; typing in the active editor asks again after a pause. */
  changed(e: vscode.TextDocumentChangeEvent): void {
    if (e.contentChanges.length === 0) {
      return;  // only the dirty state changed
    }
    if (this.shown && this.shown.editor.document === e.document) {
      this.clear();
    }
    const editor = vscode.window.activeTextEditor;
    if (editor && editor.document === e.document && ['file', 'untitled'].includes(e.document.uri.scheme)) {
      this.cancel();
      this.timer = setTimeout(() => void this.request(editor), NEXT_EDIT_DEBOUNCE_MS);
    }
  }

  /** The cursor moved or the editor scrolled: the jump hint follows the cursor. */
  moved(editor: vscode.TextEditor): void {
    if (this.shown?.editor === editor) {
      this.render();
    }
  }

  /** Another editor became active, or the document closed: what is shown goes. */
  left(editor: vscode.TextEditor | undefined): void {
    if (this.shown && this.shown.editor !== editor) {
      this.dismiss();
    }
  }

  /** Stop the pending pause and request (the answer to a cancelled request is dropped). */
  private cancel(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.pending?.cancel();
    this.pending = undefined;
  }

  /** Ask for the next edit at the cursor and show it; false when there is none (or no answer for this text). */
  async request(editor: vscode.TextEditor): Promise<boolean> {
    this.cancel();
    const c = client;
    if (!this.available(c) || editor.document.isClosed) {
      return false;
    }
    const source = new vscode.CancellationTokenSource();
    this.pending = source;
    const doc = editor.document;
    const version = doc.version;
    const params = {
      textDocument: { uri: c.code2ProtocolConverter.asUri(doc.uri), version },
      position: c.code2ProtocolConverter.asPosition(editor.selection.active),
    };
    let answer: { edits?: InlineEdit[] } | null = null;
    try {
      answer = await c.sendRequest<{ edits?: InlineEdit[] } | null>(INLINE_EDIT, params, source.token);
    } catch {
      // Cancelled, or failed: a model failure is in the status bar already (as for ghost text).
    }
    const cancelled = source.token.isCancellationRequested;
    if (this.pending === source) {
      this.pending = undefined;
    }
    source.dispose();
    if (cancelled || client !== c || doc.version !== version || vscode.window.activeTextEditor !== editor) {
      return false;
    }
    const item = answer?.edits?.[0];
    if (!item || typeof item.text !== 'string' || !item.range || item.textDocument?.version !== version
        || c.protocol2CodeConverter.asUri(item.textDocument.uri).toString() !== doc.uri.toString()) {
      return false;
    }
    const range = doc.validateRange(c.protocol2CodeConverter.asRange(item.range));
    if (range.isEmpty && (item.text === '' || range.start.isEqual(editor.selection.active))) {
      return false;  // nothing to change, or an insertion at the cursor: the inline completion's to show
    }
    this.clear();
    this.shown = { editor, item, version, ...wholeWords(doc, range, item.text) };
    this.render();
    void vscode.commands.executeCommand('setContext', NEXT_EDIT_VISIBLE, true);
    c.sendNotification(INLINE_EDIT_SHOWN, { item }).catch(() => undefined);
    return true;
  }

  /** Whether the edit is far from the cursor: Tab goes there first. */
  private far(s: ShownEdit): boolean {
    const line = s.editor.selection.active.line;
    if (line >= s.range.start.line && line <= s.range.end.line) {
      return false;
    }
    const distance = line < s.range.start.line ? s.range.start.line - line : line - s.range.end.line;
    return distance > NEAR_LINES || !s.editor.visibleRanges.some((r) => r.contains(s.range.start));
  }

  private render(): void {
    const s = this.shown;
    if (!s) {
      return;
    }
    const { editor, range, text } = s;
    const hover = new vscode.MarkdownString('**hapa: next edit** (Tab accepts, Escape dismisses)\n\n');
    if (text) {
      hover.appendCodeblock(text, editor.document.languageId);
    } else {
      hover.appendMarkdown('delete the struck-through text');
    }
    editor.setDecorations(this.deleted, range.isEmpty ? [] : [{ range, hoverMessage: hover }]);
    let shown = text.split(/\r\n|\r|\n/).join(' ⏎ ');
    if (shown.length > SHOWN_CHARS) {
      shown = shown.slice(0, SHOWN_CHARS - 1) + '…';
    }
    editor.setDecorations(this.inserted, text === '' ? [] : [{
      range: new vscode.Range(range.end, range.end), hoverMessage: hover,
      renderOptions: { after: { contentText: shown } },
    }]);
    const cursor = editor.selection.active.line;
    const end = editor.document.lineAt(cursor).range.end;
    editor.setDecorations(this.jump, this.far(s) ? [{
      range: new vscode.Range(end, end),
      renderOptions: { after: { contentText: `Tab: jump to next edit (line ${range.start.line + 1})` } },
    }] : []);
  }

  /** Tab: go to a far edit; accept a near one (apply it, tell the server, ask for the one after it). */
  async accept(): Promise<void> {
    const s = this.shown;
    if (!s) {
      return;
    }
    const { editor, item, range, text } = s;
    if (editor.document.isClosed || editor.document.version !== s.version) {
      this.clear();
      return;
    }
    if (this.far(s)) {
      editor.selection = new vscode.Selection(range.start, range.start);
      editor.revealRange(range, vscode.TextEditorRevealType.InCenterIfOutsideViewport);
      this.render();
      return;
    }
    this.clear();
    this.cancel();
    if (!await editor.edit((b) => b.replace(range, text))) {
      return;
    }
    const end = endAfter(range.start, text);
    editor.selection = new vscode.Selection(end, end);
    const c = client;
    if (item.command && c && c.state === State.Running) {
      await c.sendRequest(ExecuteCommandRequest.type,
        { command: item.command.command, arguments: item.command.arguments ?? [] }).catch(() => undefined);
    }
    await this.request(editor);  // the next edit follows from this one
  }

  dismiss(): void {
    this.cancel();
    this.clear();
  }

  /** The palette's "Suggest the next edit": ask now, and say so when there is none. */
  async trigger(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      return;
    }
    if (!this.available(client)) {
      void vscode.window.showInformationMessage(
        'hapa: next edit suggestions are off (hapa.nextEdit.enabled) or the server does not offer them');
      return;
    }
    if (!await this.request(editor)) {
      vscode.window.setStatusBarMessage('hapa: no next edit here', 3000);
    }
  }

  clear(): void {
    const s = this.shown;
    if (!s) {
      return;
    }
    this.shown = undefined;
    for (const type of [this.deleted, this.inserted, this.jump]) {
      s.editor.setDecorations(type, []);
    }
    void vscode.commands.executeCommand('setContext', NEXT_EDIT_VISIBLE, false);
  }

  dispose(): void {
    this.dismiss();
    this.deleted.dispose();
    this.inserted.dispose();
    this.jump.dispose();
  }
}

/** The settings a user actually set (not the defaults), as the nested object the server reads. */
export function userSettings(packageJSON: any, scope?: vscode.Uri): Record<string, any> {
  const out: Record<string, any> = {};
  const config = vscode.workspace.getConfiguration(undefined, scope);
  const groups: any[] = packageJSON?.contributes?.configuration ?? [];
  for (const group of groups) {
    for (const [key, prop] of Object.entries<any>(group.properties ?? {})) {
      if (CLIENT_ONLY.some((p) => key.startsWith(p))) {
        continue;
      }
      const seen = config.inspect(key);
      // Security settings (scope "machine": who may read the sidecar) come from the user's own settings only:
      // a repository's .vscode/settings.json must not clear the sidecar key or widen its bind.
      const value = prop?.scope === 'machine'
        ? seen?.globalValue
        : seen?.workspaceFolderValue ?? seen?.workspaceValue ?? seen?.globalValue;
      if (value === undefined) {
        continue;
      }
      const parts = key.split('.');
      if (parts.length < 3) {
        continue;
      }
      const section = parts[1];
      out[section] = out[section] ?? {};
      out[section][parts.slice(2).join('.')] = value;
    }
  }
  return out;
}

function renderStatus(): void {
  const s = lastStatus;
  const icon = { ok: '$(sparkle)', busy: '$(sync~spin)', warning: '$(warning)', error: '$(error)' }[s.state] ?? '$(sparkle)';
  statusItem.text = `${icon} hapa${s.code && s.state !== 'ok' ? ' ' + s.code : ''}`;
  statusItem.tooltip = `hapa-lsp: ${s.message}${s.incident_id ? ` (${s.incident_id})` : ''}\nClick: ${
    s.state === 'error' || s.state === 'warning' ? 'run hapa-lsp doctor' : 'open the dashboard'}`;
  statusItem.backgroundColor = s.state === 'error'
    ? new vscode.ThemeColor('statusBarItem.errorBackground')
    : s.state === 'warning' ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
  statusItem.command = s.state === 'error' || s.state === 'warning' ? 'hapa.ui.doctor' : 'hapa.ui.openDashboard';
  statusItem.show();
}

async function serverEnv(context: vscode.ExtensionContext): Promise<NodeJS.ProcessEnv> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [key, variable] of Object.entries(SECRETS)) {
    const value = await context.secrets.get(key);
    if (value) {
      env[variable] = value;
    }
  }
  return env;
}

async function startClient(context: vscode.ExtensionContext): Promise<void> {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  const command = cfg.get<string>('client.serverPath') || 'hapa-lsp';
  const args = cfg.get<string[]>('client.serverArgs') ?? [];
  const options = { env: await serverEnv(context) };
  const serverOptions: ServerOptions = {
    run: { command, args, options, transport: TransportKind.stdio },
    debug: { command, args, options, transport: TransportKind.stdio },
  };
  const packageJSON = context.extension.packageJSON;
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
    initializationOptions: { hapa: userSettings(packageJSON) },
    synchronize: { configurationSection: SECTION },
    middleware: {
      workspace: {
        // Answer the server's pull of section `hapa` with what the user set; other sections as usual.
        configuration: async (params, token, next) => {
          const answers = await next(params, token);
          if (answers instanceof ResponseError) {
            return answers;
          }
          return params.items.map((item, i) => item.section === SECTION
            ? userSettings(packageJSON, item.scopeUri ? vscode.Uri.parse(item.scopeUri) : undefined)
            : answers[i]);
        },
      },
    },
  };
  client = new LanguageClient('hapa', 'hapa', serverOptions, clientOptions);
  client.onNotification('hapa/status', (params: Status) => {
    lastStatus = params;
    renderStatus();
  });
  client.onNotification('hapa/streamChunk', (params: StreamChunk) => generations.chunk(params));
  try {
    await client.start();
  } catch (err) {
    lastStatus = { state: 'error', message: `could not start ${command}: ${errorText(err)}` };
    renderStatus();
    const fix = 'Set the path';
    const choice = await vscode.window.showErrorMessage(
      `hapa: could not start the language server '${command}'. Install it (pip install hapa-lsp) or set hapa.client.serverPath.`,
      fix);
    if (choice === fix) {
      await vscode.commands.executeCommand('workbench.action.openSettings', 'hapa.client.serverPath');
    }
  }
}

async function generateCode(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const question = await vscode.window.showInputBox({
    title: 'hapa: generate code',
    prompt: 'Describe the code to generate at the cursor',
    placeHolder: 'remove duplicates from a list, keep order',
    ignoreFocusOut: true,
  });
  if (!question) {
    return;
  }
  const language = editor?.document.languageId ?? 'python';
  const view = await generations.open(question, language);
  const arg: Record<string, unknown> = { user_question: question, language, stream: true };
  if (editor) {
    arg.uri = editor.document.uri.toString();
    arg.position = { line: editor.selection.active.line, character: editor.selection.active.character };
  }
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: 'hapa: generating', cancellable: true },
    async (_progress, token) => {
      try {
        const result = await execute<Generation>('hapa.generateCode', arg, token);
        lastGeneration = result;
        let text = result.generated_code ?? '';
        if (result.explanation) {
          text += `\n\n${result.explanation.split('\n').map((l) => `# ${l}`).join('\n')}\n`;
        }
        generations.set(view, text);
        vscode.window.setStatusBarMessage(`hapa: generated in ${result.response_time_ms ?? '?'} ms`, 5000);
      } catch (err) {
        if (!token.isCancellationRequested) {
          generations.set(view, `# failed: ${errorText(err)}\n`);
          void vscode.window.showErrorMessage(`hapa: ${errorText(err)}`);
        }
      } finally {
        generations.done(view);
      }
    });
}

async function showHistory(): Promise<void> {
  const page = await execute<{ items?: any[] }>('hapa.history.list', { page: 1, page_size: 50 });
  const items = (page.items ?? []).map((h) => ({
    label: String(h.question || h.kind || 'generation'),
    description: [h.status, h.model, h.created_at].filter(Boolean).join(' · '),
    detail: String(h.generated_code ?? '').split('\n')[0],
    entry: h,
  }));
  if (items.length === 0) {
    void vscode.window.showInformationMessage('hapa: no generations yet');
    return;
  }
  const pick = await vscode.window.showQuickPick(items, { title: 'hapa: generation history', matchOnDetail: true });
  if (pick) {
    lastGeneration = pick.entry;
    const doc = await vscode.workspace.openTextDocument({
      content: String(pick.entry.generated_code ?? ''),
      language: pick.entry.language || 'python',
    });
    await vscode.window.showTextDocument(doc, { preview: true });
  }
}

async function sendFeedback(): Promise<void> {
  if (!lastGeneration?.history_id && !lastGeneration?.request_id) {
    void vscode.window.showInformationMessage('hapa: generate code first (or pick one in the history), then rate it');
    return;
  }
  const ratings = [
    { label: '$(thumbsup) Good', rating: 'up' }, { label: '$(thumbsdown) Bad', rating: 'down' },
    ...[5, 4, 3, 2, 1].map((n) => ({ label: `${'★'.repeat(n)}${'☆'.repeat(5 - n)}`, rating: n })),
  ];
  const pick = await vscode.window.showQuickPick(ratings, { title: 'hapa: rate the last generation' });
  if (!pick) {
    return;
  }
  const comment = await vscode.window.showInputBox({ prompt: 'Comment (optional)', ignoreFocusOut: true }) ?? '';
  const target = lastGeneration.history_id
    ? { history_id: lastGeneration.history_id } : { request_id: lastGeneration.request_id };
  await execute('hapa.feedback', { ...target, rating: pick.rating, comment });
  vscode.window.setStatusBarMessage('hapa: thanks for the feedback', 4000);
}

async function clearCache(): Promise<void> {
  const pick = await vscode.window.showQuickPick(['all', 'completions', 'code_generation', 'user_profiles'],
    { title: 'hapa: clear which cache?' });
  if (!pick) {
    return;
  }
  const result = await execute<Record<string, unknown>>('hapa.cache.clear', { cache_type: pick, confirm: true });
  void vscode.window.showInformationMessage(`hapa: cache '${pick}' cleared ${JSON.stringify(result)}`);
}

async function openDashboard(): Promise<void> {
  let url = vscode.workspace.getConfiguration(SECTION).get<string>('client.dashboardUrl') || '';
  try {
    const health = await execute<{ sidecar?: string | { url?: string }; dashboard_url?: string }>('hapa.health');
    const sidecar = typeof health.sidecar === 'string' ? health.sidecar : health.sidecar?.url;
    url = health.dashboard_url || (sidecar ? `${sidecar.replace(/\/$/, '')}/dashboard` : url);
  } catch (err) {
    if (!url) {
      throw err;
    }
  }
  if (!url) {
    void vscode.window.showWarningMessage('hapa: the sidecar is off; enable hapa.sidecar.enabled or set hapa.client.dashboardUrl');
    return;
  }
  await vscode.env.openExternal(vscode.Uri.parse(url));
}

async function setApiKey(context: vscode.ExtensionContext): Promise<void> {
  const which = await vscode.window.showQuickPick(Object.keys(SECRETS), { title: 'hapa: which key?' });
  if (!which) {
    return;
  }
  const value = await vscode.window.showInputBox({ prompt: `${which} (empty removes it)`, password: true, ignoreFocusOut: true });
  if (value === undefined) {
    return;
  }
  if (value) {
    await context.secrets.store(which, value);
  } else {
    await context.secrets.delete(which);
  }
  await restart(context);
}

async function restart(context: vscode.ExtensionContext): Promise<void> {
  nextEdits?.dismiss();
  if (client) {
    await client.stop().catch(() => undefined);
    client = undefined;
  }
  await startClient(context);
}

/** `hapa-lsp doctor` with this window's settings (as HAPA_* variables), its report in an output channel. */
async function runDoctor(context: vscode.ExtensionContext, channel: vscode.OutputChannel): Promise<void> {
  const command = vscode.workspace.getConfiguration(SECTION).get<string>('client.serverPath') || 'hapa-lsp';
  const env = await serverEnv(context);
  const snake = (name: string) => name.replace(/([A-Z])/g, '_$1').toUpperCase();
  for (const [section, fields] of Object.entries(userSettings(context.extension.packageJSON))) {
    for (const [field, value] of Object.entries(fields as Record<string, unknown>)) {
      env[`HAPA_${snake(section)}_${snake(field)}`] = typeof value === 'string' ? value : JSON.stringify(value);
    }
  }
  channel.clear();
  channel.show(true);
  channel.appendLine(`$ ${command} doctor`);
  await new Promise<void>((resolve) => {
    execFile(command, ['doctor'], { env, timeout: 120_000, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      channel.append(stdout);
      channel.append(stderr);
      if (err) {
        channel.appendLine(`\n${command} doctor: ${err.message}`);
      }
      resolve();
    });
  });
}

function guarded(fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    try {
      await fn();
    } catch (err) {
      void vscode.window.showErrorMessage(`hapa: ${errorText(err)}`);
    }
  };
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  renderStatus();
  const doctorChannel = vscode.window.createOutputChannel('hapa doctor');
  const edits = nextEdits = new NextEdits();
  context.subscriptions.push(
    statusItem,
    doctorChannel,
    edits,
    vscode.commands.registerCommand('hapa.nextEdit.accept', guarded(() => edits.accept())),
    vscode.commands.registerCommand('hapa.nextEdit.dismiss', () => edits.dismiss()),
    vscode.commands.registerCommand('hapa.nextEdit.trigger', guarded(() => edits.trigger())),
    vscode.workspace.onDidChangeTextDocument((e) => edits.changed(e)),
    vscode.workspace.onDidCloseTextDocument(() => edits.left(vscode.window.activeTextEditor)),
    vscode.window.onDidChangeActiveTextEditor((editor) => edits.left(editor)),
    vscode.window.onDidChangeTextEditorSelection((e) => edits.moved(e.textEditor)),
    vscode.window.onDidChangeTextEditorVisibleRanges((e) => edits.moved(e.textEditor)),
    vscode.commands.registerCommand('hapa.ui.doctor', guarded(() => runDoctor(context, doctorChannel))),
    vscode.workspace.registerTextDocumentContentProvider(GenerationDocuments.scheme, generations),
    vscode.commands.registerCommand('hapa.ui.generateCode', guarded(generateCode)),
    vscode.commands.registerCommand('hapa.ui.history', guarded(showHistory)),
    vscode.commands.registerCommand('hapa.ui.feedback', guarded(sendFeedback)),
    vscode.commands.registerCommand('hapa.ui.clearCache', guarded(clearCache)),
    vscode.commands.registerCommand('hapa.ui.openDashboard', guarded(openDashboard)),
    vscode.commands.registerCommand('hapa.ui.setApiKey', guarded(() => setApiKey(context))),
    vscode.commands.registerCommand('hapa.ui.showOutput', () => client?.outputChannel.show()),
    vscode.commands.registerCommand('hapa.ui.restart', guarded(() => restart(context))),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration('hapa.client')) {
        await restart(context);
      }
    }),
  );
  await startClient(context);
}

export async function deactivate(): Promise<void> {
  if (client) {
    await client.stop();
  }
}
