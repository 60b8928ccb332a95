"""ECS packaging: packaging/ecs/ringlb.cfn.yaml (the stack) and packaging/ecs/task-definition.json.

What runs, all offline but the one npm install:
- npm's cfn-lint (1.9.7) validates the template: property names and types, required properties,
  Ref/GetAtt targets and attributes, intrinsic functions, parameter types. Its bundled resource
  specification is from 2019, so the current CloudFormation resource specification (from
  @aws-cdk/cfnspec) is put in its place (tests/packaging/cfn_lint_run.js); negative controls show
  the swapped-in validator still rejects what it should, and a run on the bundled specification
  shows that it rejects nothing but the properties ECS and friends gained since 2019.
- The task definition JSON goes through the same validator wrapped as AWS::ECS::TaskDefinition,
  and through botocore's RegisterTaskDefinition input model (Debian's python3-botocore).
- The TOML config the template puts in SSM is rendered as CloudFormation would and checked by
  the real `ringlb check`; the timings that make rolling updates lose no call are checked
  against each other and against that config.

Packages: node and npm (npm install from the registry into $RINGLB_CACHE/npm, default
build/packaging/npm; reused while tests/packaging/ecs_npm/package-lock.json is unchanged),
python3-yaml, python3-botocore (the RegisterTaskDefinition check skips without it).
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, need

ECS = ROOT / "packaging" / "ecs"
TEMPLATE = ECS / "ringlb.cfn.yaml"
TASK_DEF = ECS / "task-definition.json"
NPM_SOURCE = ROOT / "tests" / "packaging" / "ecs_npm"
CFN_LINT_RUN = ROOT / "tests" / "packaging" / "cfn_lint_run.js"
CFN_LINT_VERSION = "1.9.7"
CFNSPEC_VERSION = "2.72.1"

# ringlb facts the timings rest on (core/runtime/shard.cc, README "Restarting ringlb without
# failed calls"): after drain_timeout the last answers get kLastWordsNs (1 s) to go out, then
# the process exits; it serves (and /ready answers 200) once every DNS cluster had its first
# answer, or after 5 s at most.
LAST_WORDS_S = 1
FIRST_DNS_ANSWER_WAIT_S = 5
FARGATE_MAX_STOP_TIMEOUT_S = 120


# ----- CloudFormation YAML ------------------------------------------------------------------------

class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags, read into their long (JSON) form."""


def _tag(tag: str, fn: str):
    def construct(loader: yaml.Loader, node: yaml.Node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if fn == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {fn: value}

    _CfnLoader.add_constructor(tag, construct)


for _name in ("Ref", "Condition"):
    _tag("!" + _name, _name)
for _name in ("Sub", "GetAtt", "If", "Equals", "Not", "And", "Or", "Split", "Join", "Select",
              "FindInMap", "Base64", "GetAZs", "ImportValue", "Cidr"):
    _tag("!" + _name, "Fn::" + _name)


def load_template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


class Stack:
    """Evaluates the few intrinsic functions the tests need, as CloudFormation would for a
    stack created with the parameters' defaults (plus `overrides`)."""

    def __init__(self, template: dict, overrides: dict[str, str] | None = None,
                 name: str = "ringlb-test"):
        self.t = template
        self.params = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
        self.params.update(overrides or {})
        self.pseudo = {"AWS::StackName": name, "AWS::Region": "eu-west-1",
                       "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}

    def condition(self, name: str) -> bool:
        return bool(self.eval(self.t["Conditions"][name]))

    def eval(self, v, local: dict | None = None):
        if isinstance(v, list):
            return [self.eval(x, local) for x in v]
        if not isinstance(v, dict):
            return v
        if len(v) != 1:
            return {k: self.eval(x, local) for k, x in v.items()}
        (fn, arg), = v.items()
        if fn == "Ref":
            if arg in self.params:
                return self.params[arg]
            if arg in self.pseudo:
                return self.pseudo[arg]
            raise KeyError(f"Ref {arg}: not a parameter (resources are not evaluated here)")
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            a, b = self.eval(arg, local)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not self.eval(arg[0], local)
        if fn == "Fn::And":
            return all(self.eval(x, local) for x in arg)
        if fn == "Fn::Or":
            return any(self.eval(x, local) for x in arg)
        if fn == "Fn::If":
            cond, yes, no = arg
            return self.eval(yes if self.condition(cond) else no, local)
        if fn == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else arg
            values = {k: self.eval(x, local) for k, x in variables.items()}
            return self.sub(text, values)
        return {fn: self.eval(arg, local)}

    def sub(self, text: str, values: dict) -> str:
        def one(m: re.Match) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if name in self.params:
                return self.params[name]
            if name in self.pseudo:
                return self.pseudo[name]
            raise KeyError(f"Fn::Sub: ${{{name}}} is neither a variable, a parameter nor a "
                           "pseudo parameter (resources are not evaluated here)")
        return re.sub(r"\$\{([^}]+)\}", one, text)


def resource(template: dict, name: str) -> dict:
    return template["Resources"][name]["Properties"]


def shipped_config(overrides: dict[str, str] | None = None) -> str:
    """The TOML the template stores in the SSM parameter, as CloudFormation renders it."""
    t = load_template()
    return Stack(t, overrides).eval(resource(t, "ConfigParameter")["Value"])


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert m, duration
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# ----- npm's cfn-lint with the current resource specification ------------------------------------

def _npm_dir() -> Path:
    cache = Path(os.environ.get("RINGLB_CACHE", "build/packaging"))
    if not cache.is_absolute():
        cache = ROOT / cache
    return cache / "npm"


@pytest.fixture(scope="session")
def cfn_lint():
    """Installs cfn-lint and @aws-cdk/cfnspec at the versions in tests/packaging/ecs_npm's
    lockfile (once per lockfile) and returns run(templates, current_spec=True) -> results."""
    need("node", "npm")
    d = _npm_dir()
    lock = (NPM_SOURCE / "package-lock.json").read_bytes()
    ready = (d / "package-lock.json").is_file() and (d / "package-lock.json").read_bytes() == lock \
        and (d / "node_modules" / "cfn-lint" / "package.json").is_file() \
        and (d / "node_modules" / "@aws-cdk" / "cfnspec" / "spec" / "specification.json").is_file()
    if not ready:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(NPM_SOURCE / f, d / f)
        out = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                             cwd=d, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            shutil.rmtree(d / "node_modules", ignore_errors=True)
            (d / "package-lock.json").unlink(missing_ok=True)
            try:
                ping = subprocess.run(["npm", "ping", "--fetch-retries=0", "--fetch-timeout=20000"],
                                      capture_output=True, text=True, timeout=60)
                why = None if ping.returncode == 0 else (ping.stderr or ping.stdout).strip()
            except subprocess.TimeoutExpired:
                why = "no answer within 60 s"
            if why is not None:
                pytest.skip(f"the npm registry is unreachable (npm ping: {why[-300:]}); "
                            "npm ci said: " + out.stderr.strip()[-300:])
            pytest.fail("npm ci failed:\n" + out.stderr[-3000:])
    modules = d / "node_modules"
    got = json.loads((modules / "cfn-lint" / "package.json").read_text())["version"]
    assert got == CFN_LINT_VERSION
    got = json.loads((modules / "@aws-cdk" / "cfnspec" / "package.json").read_text())["version"]
    assert got == CFNSPEC_VERSION
    spec = modules / "@aws-cdk" / "cfnspec" / "spec" / "specification.json"

    def run(templates: list[Path], current_spec: bool = True) -> dict:
        out = subprocess.run(["node", str(CFN_LINT_RUN), str(modules),
                              str(spec) if current_spec else "-", *map(str, templates)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode in (0, 1), out.stderr
        verdict = json.loads(out.stdout)
        if current_spec:
            assert verdict["specification"] == json.loads(spec.read_text())[
                "ResourceSpecificationVersion"]
        return verdict["results"]

    run.spec = json.loads(spec.read_text())
    return run


def problems(result: dict, severities=("crit", "warn")) -> list[str]:
    return [f"{sev}: {e.get('resource')}: {e.get('message')}"
            for sev in severities for e in result["errors"].get(sev, [])]


def to_cfn(value, type_name: str, spec: dict, resource_type: str):
    """RegisterTaskDefinition JSON (camelCase) -> CloudFormation properties (PascalCase), driven
    by the resource specification: map values (log options, labels) keep their keys; a key the
    specification does not know is only capitalised, for the validator to reject."""
    if not isinstance(value, dict):
        return value
    types = spec["ResourceTypes"] if type_name == resource_type else spec["PropertyTypes"]
    props = types[type_name]["Properties"]
    out = {}
    for key, v in value.items():
        name = next((p for p in props if p.lower() == key.lower()), key[0].upper() + key[1:])
        p = props.get(name, {})
        item = p.get("ItemType") if p.get("Type") in ("List", "Map") else p.get("Type")
        if item and p.get("Type") != "Map":
            sub = f"{resource_type}.{item}"
            v = [to_cfn(x, sub, spec, resource_type) for x in v] if isinstance(v, list) \
                else to_cfn(v, sub, spec, resource_type)
        out[name] = v
    return out


def task_def() -> dict:
    return json.loads(TASK_DEF.read_text())


def wrap_task_def(td: dict, spec: dict) -> dict:
    rt = "AWS::ECS::TaskDefinition"
    return {"AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {"TaskDefinition": {"Type": rt, "Properties": to_cfn(td, rt, spec, rt)}}}


# Negative controls: the validator, on the swapped-in specification, must still catch a
# mistyped property, a wrong type, a missing required property, a dangling Ref and an unknown
# GetAtt attribute in the template at hand. name: ((old, new), expected message)
MUTATIONS = {
    "prop": (("StopTimeout: 30", "StopTimeoutSeconds: 30"),
             "StopTimeoutSeconds is not a valid property of AWS::ECS::TaskDefinition"),
    "type": (("HealthCheckIntervalSeconds: 5", "HealthCheckIntervalSeconds: five"),
             "Expecting an integer, got 'five'"),
    "required": (("          Image: !Ref RinglbImage\n          Essential: true\n"
                  "          Command: [--config-env",
                  "          Essential: true\n          Command: [--config-env"),
                 "Required property Image missing"),
    "ref": (("TargetGroupArn: !Ref TargetGroup\n", "TargetGroupArn: !Ref TargetGroupX\n"),
            "Referenced value TargetGroupX does not exist"),
    "getatt": (("!GetAtt Nlb.DNSName", "!GetAtt Nlb.DnsNameX"),
               "No such attribute DnsNameX on AWS::ElasticLoadBalancingV2::LoadBalancer"),
}


@pytest.fixture(scope="session")
def linted(cfn_lint, tmp_path_factory):
    """Every input the validator sees, in one run per specification (node's start-up and
    reading the 18 MB specification dominate): name -> cfn-lint's result."""
    d = tmp_path_factory.mktemp("cfn")
    inputs = {"template": TEMPLATE}
    text = TEMPLATE.read_text()
    for name, ((old, new), _) in MUTATIONS.items():
        assert old in text, old
        inputs["mut-" + name] = d / f"mut-{name}.yaml"
        inputs["mut-" + name].write_text(text.replace(old, new, 1))
    inputs["task-def"] = d / "task-def.json"
    inputs["task-def"].write_text(json.dumps(wrap_task_def(task_def(), cfn_lint.spec)))
    bad = task_def()
    bad["containerDefinitions"][0]["stopTimeoutSeconds"] = 30
    inputs["task-def-bad"] = d / "task-def-bad.json"
    inputs["task-def-bad"].write_text(json.dumps(wrap_task_def(bad, cfn_lint.spec)))
    results = cfn_lint(list(inputs.values()))
    out = {name: results[str(path)] for name, path in inputs.items()}
    out["template-bundled-spec"] = cfn_lint([TEMPLATE], current_spec=False)[str(TEMPLATE)]
    return out


def test_template_validates(linted):
    result = linted["template"]
    assert problems(result, ("crit", "warn", "info")) == []
    assert result["templateValid"] is True
    # Outputs resolved by the validator (Refs to resources become mock values).
    assert set(result["outputs"]) >= {"GrpcEndpoint", "ConfigParameterName", "BackendDnsName"}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_validator_rejects_broken_template(linted, name):
    r = linted["mut-" + name]
    assert r["templateValid"] is False
    assert any(MUTATIONS[name][1] in p for p in problems(r)), problems(r)


def test_bundled_2019_spec_rejects_only_newer_properties(linted, cfn_lint):
    """cfn-lint 1.9.7 as shipped knows the specification of 2019: every error it reports on the
    template is a property that the current specification has (so swapping it in widens the
    vocabulary and changes nothing else)."""
    r = linted["template-bundled-spec"]
    unknown = re.compile(r"(\w+) is not a valid property of (\S+)")
    for e in r["errors"]["crit"] + r["errors"]["warn"]:
        m = unknown.fullmatch(e["message"])
        assert m, e
        prop, typ = m.groups()
        spec = cfn_lint.spec["ResourceTypes"].get(typ) or cfn_lint.spec["PropertyTypes"].get(typ)
        assert spec and prop in spec["Properties"], e


# ----- task-definition.json -----------------------------------------------------------------------

def test_task_definition_validates_as_cloudformation(linted, cfn_lint):
    result = linted["task-def"]
    assert problems(result, ("crit", "warn", "info")) == []
    assert result["templateValid"] is True
    # The conversion kept map keys and reached every level.
    [c] = wrap_task_def(task_def(), cfn_lint.spec)["Resources"]["TaskDefinition"]["Properties"][
        "ContainerDefinitions"]
    assert c["HealthCheck"]["StartPeriod"] == 10 and c["Ulimits"][0]["SoftLimit"] == 65536
    assert "awslogs-group" in c["LogConfiguration"]["Options"]
    # And a key the specification does not know is rejected.
    assert linted["task-def-bad"]["templateValid"] is False
    assert any("StopTimeoutSeconds is not a valid property" in p
               for p in problems(linted["task-def-bad"]))


def _enum_errors(value, shape, where="") -> list[str]:
    """botocore's ParamValidator checks types, required members and unknown keys, not enums."""
    errors = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                errors += _enum_errors(v, shape.members[k], f"{where}.{k}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            errors += _enum_errors(v, shape.member, f"{where}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for k, v in value.items():
            errors += _enum_errors(v, shape.value, f"{where}.{k}")
    elif getattr(shape, "enum", None) and value not in shape.enum:
        errors.append(f"{where}: {value!r} not in {shape.enum}")
    return errors


def test_task_definition_matches_register_task_definition_api():
    try:
        import botocore.session
        from botocore.validate import ParamValidator
    except ImportError:
        pytest.skip("python3-botocore is not installed (apt-get install python3-botocore)")
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    td = task_def()
    report = ParamValidator().validate(td, shape)
    assert not report.has_errors(), report.generate_report()
    assert _enum_errors(td, shape) == []
    # Negative control: the model rejects what ECS would.
    bad = copy.deepcopy(td)
    bad["cpu"] = 256
    bad["containerDefinitions"][0]["stopTimeoutSeconds"] = 30
    text = ParamValidator().validate(bad, shape).generate_report()
    assert "cpu" in text and "stopTimeoutSeconds" in text
    bad = copy.deepcopy(td)
    bad["networkMode"] = "awsvpcx"
    assert _enum_errors(bad, shape)


def test_task_definition_invariants():
    td = task_def()
    config = tomllib.loads(shipped_config())
    drain = seconds(config["proxy"]["drain_timeout"])
    assert td["family"] == "ringlb"
    assert td["networkMode"] == "awsvpc"
    assert td["requiresCompatibilities"] == ["FARGATE"]
    assert (td["cpu"], td["memory"]) == ("256", "512")
    assert td["runtimePlatform"] == {"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"}
    assert td["executionRoleArn"].startswith("arn:aws:iam::")
    assert td["taskRoleArn"].startswith("arn:aws:iam::")
    [c] = td["containerDefinitions"]
    assert c["name"] == "ringlb" and c["essential"] is True
    assert c["command"] == ["--config-env", "RINGLB_CONFIG"]
    [secret] = c["secrets"]
    assert secret["name"] == "RINGLB_CONFIG"
    assert re.fullmatch(r"arn:aws:ssm:[^:]+:[^:]+:parameter/\S+", secret["valueFrom"])
    hc = c["healthCheck"]
    assert hc["command"] == ["CMD", "/usr/bin/ringlb", "ready", "--admin", "127.0.0.1:9901"]
    # ECS's bounds: interval 5-300, timeout 2-60, retries 1-10, startPeriod 0-300.
    assert 5 <= hc["interval"] <= 300 and 2 <= hc["timeout"] <= 60
    assert 1 <= hc["retries"] <= 10 and 0 <= hc["startPeriod"] <= 300
    assert hc["timeout"] < hc["interval"]
    assert hc["startPeriod"] >= FIRST_DNS_ANSWER_WAIT_S
    # SIGKILL must not come before ringlb has exited: drain_timeout + the last words.
    assert drain + LAST_WORDS_S < c["stopTimeout"] <= FARGATE_MAX_STOP_TIMEOUT_S
    # Ports: the listener and the admin of the config, nothing else.
    ports = {p["containerPort"] for p in c["portMappings"]}
    assert ports == {port_of(config["listener"][0]["address"]),
                     port_of(config["admin"]["address"])}
    assert all(p["protocol"] == "tcp" for p in c["portMappings"])
    # The health check asks the admin on loopback: the admin must listen there too.
    assert config["admin"]["address"].split(":")[0] in ("0.0.0.0", "127.0.0.1")
    assert port_of(hc["command"][-1]) == port_of(config["admin"]["address"])
    assert c["readonlyRootFilesystem"] is True
    uid = c["user"].split(":")[0]
    assert uid not in ("0", "root") and uid.isdigit()
    [nofile] = [u for u in c["ulimits"] if u["name"] == "nofile"]
    assert nofile["softLimit"] == nofile["hardLimit"] >= 2 * config["proxy"].get(
        "max_connections", 10000)
    assert c["logConfiguration"]["logDriver"] == "awslogs"
    assert {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(
        c["logConfiguration"]["options"])


def test_task_definition_json_is_the_template_task(cfn_lint):
    """The JSON and the stack's TaskDefinition are the same task, except the values the stack
    fills in (image, role and parameter ARNs, log group and region)."""
    t = load_template()
    rt = "AWS::ECS::TaskDefinition"
    from_json = to_cfn(task_def(), rt, cfn_lint.spec, rt)
    stack = resource(t, "TaskDefinition")
    filled = {"ExecutionRoleArn", "TaskRoleArn"}
    assert {k: v for k, v in from_json.items() if k not in filled and k != "ContainerDefinitions"} \
        == {k: v for k, v in stack.items() if k not in filled and k != "ContainerDefinitions"}
    [a], [b] = from_json["ContainerDefinitions"], stack["ContainerDefinitions"]

    def strip(c):
        c = copy.deepcopy(c)
        c.pop("Image")
        for s in c["Secrets"]:
            s.pop("ValueFrom")
        for k in ("awslogs-group", "awslogs-region"):
            c["LogConfiguration"]["Options"].pop(k)
        return c

    assert strip(a) == strip(b)


# ----- the shipped config and the stack's timings -------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, {"BackendDnsName": "orders.internal.example",
                                            "BackendSecurityGroupId": "sg-0123456789abcdef0"}],
                         ids=["sample-backend", "existing-backend"])
def test_shipped_config_passes_ringlb_check(ringlb_bin, tmp_path, overrides):
    text = shipped_config(overrides)
    assert len(text.encode()) <= 4096, "over the SSM Standard tier's 4 KB"
    path = tmp_path / "ringlb.toml"
    path.write_text(text)
    out = subprocess.run([str(ringlb_bin), "check", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{path}: ok (1 listeners, 1 clusters)"
    config = tomllib.loads(text)
    [cluster] = config["cluster"]
    want = overrides.get("BackendDnsName", "backend.internal.example")
    assert (cluster["dns"], cluster["port"], cluster["record"]) == (want, 50051, "A")
    # Negative control: `ringlb check` rejects a broken variant of the same file.
    path.write_text(text.replace('drain_timeout = "20s"', 'drain_timeout = "20 s"'))
    out = subprocess.run([str(ringlb_bin), "check", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0 and "proxy.drain_timeout" in out.stderr


def test_rolling_update_timings_agree():
    """The numbers in the header comment of ringlb.cfn.yaml, checked against each other."""
    t = load_template()
    stack = Stack(t)
    config = tomllib.loads(shipped_config())
    drain = seconds(config["proxy"]["drain_timeout"])
    listener_port = port_of(config["listener"][0]["address"])
    admin = config["admin"]["address"]

    td = resource(t, "TaskDefinition")
    [c] = td["ContainerDefinitions"]
    stop = c["StopTimeout"]
    assert drain + LAST_WORDS_S < stop <= FARGATE_MAX_STOP_TIMEOUT_S

    tg = resource(t, "TargetGroup")
    attrs = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}
    # ECS waits the delay out before SIGTERM; it must cover a whole drain should SIGTERM come
    # while the target drains, and stay short (the default 300 s makes each task take 5 min).
    assert drain <= int(attrs["deregistration_delay.timeout_seconds"]) <= 60
    assert attrs["deregistration_delay.connection_termination.enabled"] == "false"
    assert attrs["target_health_state.unhealthy.connection_termination.enabled"] == "false"
    assert int(attrs["target_health_state.unhealthy.draining_interval_seconds"]) >= drain
    # Health check: HTTP /ready on the admin port, as tight as an NLB allows.
    assert (tg["HealthCheckProtocol"], tg["HealthCheckPath"]) == ("HTTP", "/ready")
    assert int(tg["HealthCheckPort"]) == port_of(admin)
    assert admin.startswith("0.0.0.0:"), "the NLB's checks come from its own addresses"
    assert (tg["HealthCheckIntervalSeconds"], tg["HealthCheckTimeoutSeconds"]) == (5, 2)
    assert (tg["HealthyThresholdCount"], tg["UnhealthyThresholdCount"]) == (2, 2)
    assert tg["Matcher"] == {"HttpCode": "200"}
    assert (tg["TargetType"], tg["Protocol"], tg["Port"]) == ("ip", "TCP", listener_port)
    nlb_listener = resource(t, "Listener")
    assert (nlb_listener["Protocol"], nlb_listener["Port"]) == ("TCP", listener_port)
    # The container's own check and ports agree with the config.
    assert c["HealthCheck"]["Command"][-1] == "127.0.0.1:" + str(port_of(admin))
    assert {p["ContainerPort"] for p in c["PortMappings"]} == {listener_port, port_of(admin)}

    service = resource(t, "Service")
    assert service["LoadBalancers"] == [{"ContainerName": c["Name"], "ContainerPort": listener_port,
                                         "TargetGroupArn": {"Ref": "TargetGroup"}}]
    # Grace: ringlb's start (first DNS answer) and the NLB's healthy threshold.
    assert service["HealthCheckGracePeriodSeconds"] >= FIRST_DNS_ANSWER_WAIT_S + \
        tg["HealthyThresholdCount"] * tg["HealthCheckIntervalSeconds"]
    for name in ("Service", "BackendService"):
        dc = resource(t, name)["DeploymentConfiguration"]
        assert (dc["MinimumHealthyPercent"], dc["MaximumPercent"]) == (100, 200), name
        assert dc["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}, name
        assert resource(t, name)["LaunchType"] == "FARGATE"
        subnets = resource(t, name)["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
        assert subnets == [{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}]
    assert stack.params["DesiredCount"] == "2"

    # Cloud Map: MULTIVALUE A records with a low TTL, used by the backend service, followed by
    # ringlb's cluster. ringlb re-queries when the TTL runs out, within its refresh bounds.
    dns = resource(t, "BackendDiscoveryService")["DnsConfig"]
    assert dns["RoutingPolicy"] == "MULTIVALUE"
    [record] = dns["DnsRecords"]
    assert record["Type"] == "A" and record["TTL"] <= 10
    [cluster] = config["cluster"]
    assert cluster["record"] == record["Type"]
    assert seconds(cluster.get("min_refresh", "1s")) <= record["TTL"] <= seconds(
        cluster.get("max_refresh", "30s"))
    assert cluster["dns"] == stack.sub("${BackendServiceName}.${NamespaceName}", {})
    assert cluster["port"] == int(stack.params["BackendPort"])
    assert resource(t, "BackendService")["ServiceRegistries"] == [
        {"RegistryArn": {"Fn::GetAtt": ["BackendDiscoveryService", "Arn"]}}]
    # Idle client connections end (GOAWAY) before the NLB's 350 s TCP idle timeout drops them.
    assert seconds(config["proxy"]["idle_timeout"]) < 350


def test_security_groups_and_config_source():
    t = load_template()
    config = tomllib.loads(shipped_config())
    listener_port = port_of(config["listener"][0]["address"])
    admin_port = port_of(config["admin"]["address"])
    r = t["Resources"]

    def j(v) -> str:
        return json.dumps(v, sort_keys=True)

    def rules(kind: str, group: str) -> set:
        """(from port, to port, peer group) of every SecurityGroup{kind} resource on group."""
        found = set()
        for res in r.values():
            p = res.get("Properties", {})
            if res["Type"] == f"AWS::EC2::SecurityGroup{kind}" and \
                    p["GroupId"] == {"Fn::GetAtt": [group, "GroupId"]}:
                peer = p.get("SourceSecurityGroupId") or p.get("DestinationSecurityGroupId")
                found.add((j(p["FromPort"]), j(p["ToPort"]), j(peer)))
        return found

    nlb, ringlb = (j({"Fn::GetAtt": [g, "GroupId"]}) for g in ("NlbSecurityGroup",
                                                                "RinglbSecurityGroup"))
    lp, ap = j(listener_port), j(admin_port)
    assert rules("Ingress", "RinglbSecurityGroup") == {(lp, lp, nlb), (ap, ap, nlb)}
    assert rules("Egress", "NlbSecurityGroup") == {(lp, lp, ringlb), (ap, ap, ringlb)}
    backend_port = j({"Ref": "BackendPort"})
    backend_sg = j({"Fn::If": ["CreateBackend", {"Fn::GetAtt": ["BackendSecurityGroup", "GroupId"]},
                               {"Ref": "BackendSecurityGroupId"}]})
    assert rules("Egress", "RinglbSecurityGroup") == {(backend_port, backend_port, backend_sg)}
    # The backends' side: BackendFromRinglb, on the created or the given group.
    p = resource(t, "BackendFromRinglb")
    assert j(p["GroupId"]) == backend_sg and p["SourceSecurityGroupId"] == json.loads(ringlb)
    assert j(p["FromPort"]) == j(p["ToPort"]) == backend_port
    ingress = resource(t, "NlbSecurityGroup")["SecurityGroupIngress"]
    assert [(i["FromPort"], i["ToPort"]) for i in ingress] == [(listener_port, listener_port)]

    # The config reaches the container through `secrets` from the stack's SSM parameter, which
    # only the execution role may read.
    [c] = resource(t, "TaskDefinition")["ContainerDefinitions"]
    assert c["Command"] == ["--config-env", "RINGLB_CONFIG"]
    [secret] = c["Secrets"]
    assert secret["Name"] == "RINGLB_CONFIG"
    arn = secret["ValueFrom"]["Fn::Sub"]
    assert arn.endswith(":parameter${ConfigParameter}")
    [policy] = resource(t, "ExecutionRole")["Policies"]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "ssm:GetParameters" and statement["Resource"] == {"Fn::Sub": arn}
    param = Stack(t).eval(resource(t, "ConfigParameter")["Name"])
    assert param.startswith("/")  # so "parameter" + name is the parameter's ARN


def test_readme_shows_the_shipped_config():
    """packaging/README.md prints the config the stack ships; they must not drift apart."""
    text = (ROOT / "packaging" / "README.md").read_text()
    section = text[text.index("### 2. The config"):text.index("### 3. Deploy the stack")]
    shown = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    assert tomllib.loads(shown) == tomllib.loads(shipped_config())
