// Drives Ember with the AWS SDK for JavaScript v3, as a Lambda user would, and prints what it
// saw as JSON for the test that runs it (tests/e2e/lambda_clients_test.cc).
//   node sdk_check.mjs ENDPOINT KEY_ID KEY_SECRET ADMIN_SECRET
import {
  LambdaClient, InvokeCommand, GetFunctionCommand, ListFunctionsCommand,
} from '@aws-sdk/client-lambda';

const [endpoint, keyId, keySecret, adminSecret] = process.argv.slice(2);
const client = (accessKeyId, secretAccessKey) => new LambdaClient({
  endpoint, region: 'us-east-1', maxAttempts: 1, credentials: { accessKeyId, secretAccessKey },
});
const withKey = client(keyId, keySecret);
const admin = client('admin', adminSecret);
const text = (bytes) => new TextDecoder().decode(bytes);
const out = {};

const ok = await withKey.send(new InvokeCommand({
  FunctionName: 'sdk-fn', Payload: JSON.stringify({ name: 'sdk' }), LogType: 'Tail',
}));
out.invoke = {
  status: ok.StatusCode, payload: JSON.parse(text(ok.Payload)), version: ok.ExecutedVersion,
  functionError: ok.FunctionError ?? null,
  log: Buffer.from(ok.LogResult ?? '', 'base64').toString(),
};
const failed = await withKey.send(new InvokeCommand({
  FunctionName: 'sdk-fn', Payload: JSON.stringify({ fail: true }),
}));
out.error = { status: failed.StatusCode, functionError: failed.FunctionError,
  payload: JSON.parse(text(failed.Payload)) };
const queued = await withKey.send(new InvokeCommand({
  FunctionName: 'sdk-fn', InvocationType: 'Event', Payload: JSON.stringify({ name: 'later' }),
}));
out.event = { status: queued.StatusCode };
const got = await admin.send(new GetFunctionCommand({ FunctionName: 'sdk-fn' }));
out.get = { name: got.Configuration.FunctionName, runtime: got.Configuration.Runtime,
  state: got.Configuration.State };
const list = await admin.send(new ListFunctionsCommand({}));
out.list = list.Functions.map((f) => f.FunctionName);
try {
  await client(keyId, 'not-the-secret').send(new InvokeCommand({ FunctionName: 'sdk-fn' }));
  out.badSecret = 'accepted';
} catch (err) {
  out.badSecret = err.name;
}
try {
  await withKey.send(new GetFunctionCommand({ FunctionName: 'sdk-fn' }));
  out.keyManages = 'accepted';
} catch (err) {
  out.keyManages = err.name;
}
console.log(JSON.stringify(out));
