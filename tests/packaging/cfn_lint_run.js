// Runs npm's cfn-lint (martysweet/cfn-lint) on CloudFormation templates and prints its verdicts
// as one JSON object. cfn-lint 1.9.7 bundles the CloudFormation resource specification of 2019
// (2.29.0), which lacks properties ECS gained since (RuntimePlatform, StopTimeout, Secrets,
// DeploymentCircuitBreaker...). With SPEC_JSON, its in-memory specification is replaced by that
// file (the current AWS CloudFormation resource specification, as the @aws-cdk/cfnspec package
// ships it) before validating; the validator itself is unchanged. "-" keeps the bundled one.
//
// usage: node cfn_lint_run.js NODE_MODULES_DIR SPEC_JSON|- TEMPLATE...
'use strict';
const path = require('path');

const [modules, specPath, ...templates] = process.argv.slice(2);
if (!modules || !specPath || templates.length === 0) {
  console.error('usage: node cfn_lint_run.js NODE_MODULES_DIR SPEC_JSON|- TEMPLATE...');
  process.exit(2);
}
const awsData = require(path.join(modules, 'cfn-lint', 'lib', 'awsData'));
const api = require(path.join(modules, 'cfn-lint', 'lib', 'api'));
if (specPath !== '-') {
  const spec = require(path.resolve(specPath));
  // resourcesSpec.js and validator.js read these fields at each lookup, so replacing them here
  // replaces what every check sees.
  awsData.awsResources.ResourceSpecificationVersion = spec.ResourceSpecificationVersion;
  awsData.awsResources.ResourceTypes = spec.ResourceTypes;
  awsData.awsResources.PropertyTypes = spec.PropertyTypes;
}
const results = {};
let failed = false;
for (const t of templates) {
  try {
    results[t] = api.validateFile(t, {});
  } catch (e) {
    results[t] = {templateValid: false, errors: {crit: [{message: 'cannot parse: ' + e.message}]}};
  }
  if (!results[t].templateValid) failed = true;
}
console.log(JSON.stringify({
  specification: awsData.awsResources.ResourceSpecificationVersion,
  results,
}, null, 1));
process.exit(failed ? 1 : 0);
