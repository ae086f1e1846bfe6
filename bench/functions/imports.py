import lib2000


def handler(event, context):
    return {"value": lib2000.f7(3)}
